"""Data: token shards (llm.c ``.bin`` / build-nanogpt ``.npy``), manifests, ``gpt2 prepare`` and the DDP loader.

from gpt2.data import TokenShardLoader, read_manifest, prepare_documents
prepare_documents(["some text", "another document"], "data/tiny", shard_tokens=1000, val_tokens=10)
loader = TokenShardLoader("data/tiny", "train", batch_size=2, seq_len=4)
x, y = loader.next_batch()   # int64 (B, T); y is x shifted by one token

Shard IO (shards, manifest, writer, encode, sources, prepare, pretokenized) needs numpy but not torch; only the
loaders (loader, mixture), which hand out tensors, import torch. Names resolve on first use (lazy):
``gpt2 prepare --help`` loads neither numpy nor torch.
"""

from gpt2._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "gpt2.data.loader": ("TokenShardLoader",),
        "gpt2.data.manifest": ("read_manifest", "split_shards", "write_manifest"),
        "gpt2.data.mixture": ("MixtureLoader",),
        "gpt2.data.prepare": ("prepare_documents",),
        "gpt2.data.shards": ("open_shard", "read_bin_header", "write_shard"),
        "gpt2.data.writer": ("ShardWriter",),
    },
)
