"""Data: token shards (llm.c ``.bin`` / build-nanogpt ``.npy``), manifests, ``gpt2 prepare`` and the DDP loader.

from gpt2.data import TokenShardLoader, read_manifest, prepare_documents
prepare_documents(["some text", "another document"], "data/tiny", shard_tokens=1000, val_tokens=10)
loader = TokenShardLoader("data/tiny", "train", batch_size=2, seq_len=4)
x, y = loader.next_batch()   # int64 (B, T); y is x shifted by one token

Shard IO (shards, manifest, writer, encode, sources, prepare) needs numpy but not torch; only the loader,
which hands out tensors, imports torch. Names resolve on first use (lazy): ``gpt2 prepare --help`` loads
neither numpy nor torch.
"""

from typing import TYPE_CHECKING

from gpt2._lazy import lazy_exports

if TYPE_CHECKING:  # the exports; at run time imported on first use (gpt2._lazy)
    from gpt2.data.loader import TokenShardLoader  # noqa: F401
    from gpt2.data.manifest import read_manifest, split_shards, write_manifest  # noqa: F401
    from gpt2.data.prepare import prepare_documents  # noqa: F401
    from gpt2.data.shards import open_shard, read_bin_header, write_shard  # noqa: F401
    from gpt2.data.writer import ShardWriter  # noqa: F401

__getattr__, __dir__, __all__ = lazy_exports(__name__)
