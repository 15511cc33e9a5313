"""`python -m tools.bench data`: the seed-style reference loader reads what ours reads; the suite runs."""

import math

import numpy as np
import torch

from gpt2.data.loader import TokenShardLoader
from tools.bench import data


def test_reference_loader_yields_the_same_batches_within_a_shard(tmp_path):
    npy_files = data.make_dataset(tmp_path, shards=2, shard_tokens=5000)
    ours = TokenShardLoader(tmp_path, "train", batch_size=2, seq_len=64)
    reference = data.SeedShardLoader(npy_files, 2, 64)
    per_shard = (5000 - 1) // 128
    for _ in range(per_shard):  # identical until the first shard ends (ours then reads across the boundary)
        (x, y), (rx, ry) = ours.next_batch(), reference.next_batch()
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert reference.shard == 1 and reference.next_batch()[0][0, 0] == int(np.load(npy_files[1])[0])


def test_quick_run():
    (result,) = data.run(repeat=1, quick=True)
    assert result.unit == "batch/s" and "DataLoaderLite" in result.reference_name
    assert result.extra["steps"] == 2 * ((200_000 - 1) // 8192)
    assert math.isclose(result.extra["tokens_per_s"], result.ours * 8 * 1024)
    assert result.ours > 0 and result.reference > 0
