"""``python -m tools.bench data``: batches/s of ``TokenShardLoader`` (B=8, T=1024) vs build-nanogpt's loader.

The reference is build-nanogpt's ``DataLoaderLite``: it ``np.load``s a whole ``.npy`` shard and copies
it into an int64 tensor (``torch.tensor(npt.astype(np.int32), dtype=torch.long)``) on every shard
switch, then slices batches out of memory. Both read the same tokens (our ``.bin`` shards, build-nanogpt's
``.npy`` copies) for one full pass over all shards, so the reference pays its shard loads exactly as
in training. Ours memory-maps shards and copies only each batch (``B*T+1`` tokens). Full size: 4 shards of
4 M tokens (a shard load costs the reference in proportion to the batches it serves, so the ratio does not
depend on shard size; GPT-2 training uses 100 M-token shards).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from gpt2.data.loader import TokenShardLoader
from gpt2.data.manifest import new_manifest, write_manifest
from gpt2.data.shards import write_shard
from tools.bench.core import BenchResult, interleaved_median_seconds


class SeedShardLoader:
    """build-nanogpt's ``DataLoaderLite`` (single process), the reference: whole shards in memory."""

    def __init__(self, files: list[Path], batch_size: int, seq_len: int):
        self.files, self.B, self.T = files, batch_size, seq_len
        self.shard = 0
        self.tokens = self._load(files[0])
        self.position = 0

    @staticmethod
    def _load(path: Path) -> torch.Tensor:
        return torch.tensor(np.load(path).astype(np.int32), dtype=torch.long)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.B, self.T
        buf = self.tokens[self.position : self.position + B * T + 1]
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        self.position += B * T
        if self.position + B * T + 1 > len(self.tokens):
            self.shard = (self.shard + 1) % len(self.files)
            self.tokens = self._load(self.files[self.shard])
            self.position = 0
        return x, y


def make_dataset(root: Path, shards: int, shard_tokens: int) -> list[Path]:
    """Random-token train shards in both formats under ``root``; returns the ``.npy`` paths."""
    rng = np.random.default_rng(0)
    manifest = new_manifest("bench: random tokens")
    npy_files = []
    for i in range(shards):
        tokens = rng.integers(0, 50257, size=shard_tokens, dtype=np.uint16)
        name = f"bench_train_{i:06d}.bin"
        manifest["shards"].append({"file": name, "split": "train", "tokens": shard_tokens, "sha256": None})
        write_shard(root / name, tokens)
        npy_files.append(root / "seed" / f"edufineweb_train_{i:06d}.npy")
        npy_files[-1].parent.mkdir(exist_ok=True)
        np.save(npy_files[-1], tokens)
    manifest.update(complete=True, total_tokens=shards * shard_tokens)
    write_manifest(root, manifest)
    return npy_files


def run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]:
    """Loader throughput in batches/s at B=8, T=1024 over one pass of the shards; ``device`` is unused."""
    B, T = 8, 1024
    shards, shard_tokens = (2, 200_000) if quick else (4, 4_000_000)
    root = Path(tempfile.mkdtemp(prefix="gpt2-bench-data-"))
    try:
        npy_files = make_dataset(root, shards, shard_tokens)
        steps = shards * ((shard_tokens - 1) // (B * T))  # a full pass for both loaders

        def ours() -> None:
            loader = TokenShardLoader(root, "train", batch_size=B, seq_len=T)
            for _ in range(steps):
                loader.next_batch()

        def reference() -> None:
            loader = SeedShardLoader(npy_files, B, T)
            for _ in range(steps):
                loader.next_batch()

        times = interleaved_median_seconds({"ours": ours, "reference": reference}, repeat=repeat, warmup=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ours_rate, reference_rate = steps / times["ours"], steps / times["reference"]
    return [
        BenchResult(
            name=f"loader batches/s (B={B}, T={T})",
            ours=ours_rate,
            reference=reference_rate,
            unit="batch/s",
            ratio=ours_rate / reference_rate,
            reference_name="build-nanogpt DataLoaderLite (np.load + torch.tensor of whole shards)",
            extra={
                "tokens_per_s": ours_rate * B * T,
                "steps": steps,
                "shards": shards,
                "shard_tokens": shard_tokens,
                "reference_resident_bytes": shard_tokens * 8,  # one int64 shard held in RAM
            },
        )
    ]
