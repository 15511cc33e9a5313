"""Data: token shards (llm.c ``.bin`` / build-nanogpt ``.npy``), manifests, ``gpt2 prepare`` and the DDP loader.

from gpt2.data import TokenShardLoader, read_manifest, prepare_documents
prepare_documents(["some text", "another document"], "data/tiny", shard_tokens=1000, val_tokens=10)
loader = TokenShardLoader("data/tiny", "train", batch_size=2, seq_len=4)
x, y = loader.next_batch()   # int64 (B, T); y is x shifted by one token

Shard IO (shards, manifest, writer, encode, sources, prepare) needs numpy but not torch; only the loader,
which hands out tensors, imports torch — so ``TokenShardLoader`` is imported on first use.
"""

from __future__ import annotations

from typing import Any

from gpt2.data.manifest import read_manifest, split_shards, write_manifest
from gpt2.data.prepare import prepare_documents
from gpt2.data.shards import open_shard, read_bin_header, write_shard
from gpt2.data.writer import ShardWriter

__all__ = [
    "ShardWriter",
    "TokenShardLoader",
    "open_shard",
    "prepare_documents",
    "read_bin_header",
    "read_manifest",
    "split_shards",
    "write_manifest",
    "write_shard",
]


def __getattr__(name: str) -> Any:
    """``gpt2.data.TokenShardLoader``, imported (with torch) only when asked for."""
    if name == "TokenShardLoader":
        from gpt2.data.loader import TokenShardLoader

        return TokenShardLoader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
