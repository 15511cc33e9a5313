"""TokenShardLoader: shapes, in-order coverage, DDP rank partitioning, epochs, shuffle, resume, val."""

import json

import numpy as np
import pytest
import torch

from gpt2.data.loader import TokenShardLoader
from gpt2.data.manifest import new_manifest, write_manifest
from gpt2.data.shards import write_shard
from gpt2.errors import GPT2Error


def make_dataset(root, train_sizes=(100, 37, 63), val_size=50):
    """Shards whose tokens are their stream offsets (train: 0..N-1, val: 10000+...), so positions are checkable."""
    manifest = new_manifest("synthetic")
    start = 0
    for i, size in enumerate([val_size, *train_sizes]):
        split = "val" if i == 0 else "train"
        tokens = np.arange(size) + (10000 if split == "val" else start)
        start += 0 if split == "val" else size
        name = f"syn_{split}_{i:06d}.bin"
        sha = write_shard(root / name, tokens)
        manifest["shards"].append({"file": name, "split": split, "tokens": size, "sha256": sha})
    manifest.update(complete=True, total_tokens=val_size + sum(train_sizes), documents=1)
    write_manifest(root, manifest)
    return root


def test_batches_shapes_and_targets(tmp_path):
    loader = TokenShardLoader(make_dataset(tmp_path), "train", batch_size=2, seq_len=5)
    x, y = loader.next_batch()
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (2, 5)
    assert x.flatten().tolist() == list(range(10)) and y.flatten().tolist() == list(range(1, 11))
    x, _ = loader.next_batch()
    assert x[0, 0].item() == 10


def test_covers_stream_in_order_across_shard_boundaries_then_wraps(tmp_path):
    loader = TokenShardLoader(make_dataset(tmp_path), "train", batch_size=3, seq_len=7)
    assert loader.tokens_per_epoch == 200 and loader.steps_per_epoch == (200 - 1) // 21 == 9
    seen = [loader.next_batch()[0].flatten() for _ in range(loader.steps_per_epoch)]
    assert torch.cat(seen).tolist() == list(range(9 * 21))  # crosses the 100 and 137 shard boundaries
    x, _ = loader.next_batch()  # epoch 2 starts over (the last 200 - 189 tokens are the dropped tail)
    assert loader.epoch == 1 and x.flatten().tolist() == list(range(21))


def test_ranks_are_disjoint_and_union_equals_single_rank(tmp_path):
    data = make_dataset(tmp_path)
    single = TokenShardLoader(data, "train", batch_size=4, seq_len=6)
    ranks = [TokenShardLoader(data, "train", batch_size=2, seq_len=6, rank=r, world_size=2) for r in range(2)]
    assert single.steps_per_epoch == ranks[0].steps_per_epoch
    for _ in range(single.steps_per_epoch * 2 + 1):  # a few epochs
        x_single, y_single = single.next_batch()
        (x0, y0), (x1, y1) = (loader.next_batch() for loader in ranks)
        assert not set(x0.flatten().tolist()) & set(x1.flatten().tolist())
        assert torch.equal(torch.cat([x0, x1]), x_single) and torch.equal(torch.cat([y0, y1]), y_single)


def test_state_dict_resumes_at_exactly_the_next_batch(tmp_path):
    data = make_dataset(tmp_path)
    loader = TokenShardLoader(data, "train", batch_size=2, seq_len=8, seed=3, shuffle=True)
    for _ in range(17):  # into the second epoch
        loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))  # must survive JSON
    expected = [loader.next_batch() for _ in range(20)]
    resumed = TokenShardLoader(data, "train", batch_size=2, seq_len=8, seed=3, shuffle=True)
    resumed.load_state_dict(state)
    for (x, y), (rx, ry) in zip(expected, (resumed.next_batch() for _ in range(20)), strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_resume_with_other_world_size_continues_at_the_same_token(tmp_path):
    data = make_dataset(tmp_path)
    loader = TokenShardLoader(data, "train", batch_size=2, seq_len=5)
    loader.next_batch()
    rank1 = TokenShardLoader(data, "train", batch_size=1, seq_len=5, rank=1, world_size=2)
    rank1.load_state_dict(loader.state_dict())
    assert rank1.next_batch()[0].flatten().tolist() == list(range(15, 20))


def test_resume_refuses_a_different_dataset_or_seed(tmp_path):
    data = make_dataset(tmp_path)
    state = TokenShardLoader(data, "train", batch_size=1, seq_len=4, seed=1, shuffle=True).state_dict()
    with pytest.raises(GPT2Error, match="seed"):
        TokenShardLoader(data, "train", batch_size=1, seq_len=4, seed=2, shuffle=True).load_state_dict(state)
    with pytest.raises(GPT2Error, match="split"):
        TokenShardLoader(data, "val", batch_size=1, seq_len=4, seed=1, shuffle=True).load_state_dict(state)


def test_shuffle_permutes_shards_per_epoch_deterministically(tmp_path):
    data = make_dataset(tmp_path, train_sizes=(10, 10, 10, 10, 10))

    def epoch_starts(seed):
        loader = TokenShardLoader(data, "train", batch_size=1, seq_len=10, seed=seed, shuffle=True)
        starts = []
        for _ in range(6):  # 4 steps per epoch (the 5th window lacks its last target token)
            starts.append([loader.next_batch()[0][0, 0].item() for _ in range(loader.steps_per_epoch)])
        return starts

    first = epoch_starts(seed=0)
    assert first == epoch_starts(seed=0)  # same seed, same order
    assert first != epoch_starts(seed=1)
    assert len({tuple(epoch) for epoch in first}) > 1  # the order changes between epochs
    for epoch in first:
        assert all(start % 10 == 0 for start in epoch) and len(set(epoch)) == 4


def test_fresh_val_loaders_are_identical(tmp_path):
    data = make_dataset(tmp_path)
    a = TokenShardLoader(data, "val", batch_size=2, seq_len=4)
    b = TokenShardLoader(data, "val", batch_size=2, seq_len=4)
    batches = [a.next_batch()[0] for _ in range(9)]
    assert batches[0].flatten().tolist() == list(range(10000, 10008))
    assert all(torch.equal(x, b.next_batch()[0]) for x in batches)
    a.reset()
    assert torch.equal(a.next_batch()[0], batches[0])


def test_bad_arguments_and_too_small_split(tmp_path):
    data = make_dataset(tmp_path)
    with pytest.raises(GPT2Error, match="fewer than one step needs"):
        TokenShardLoader(data, "val", batch_size=5, seq_len=10)
    with pytest.raises(GPT2Error, match="rank 2"):
        TokenShardLoader(data, "train", batch_size=1, seq_len=4, rank=2, world_size=2)
    with pytest.raises(GPT2Error, match="unknown split"):
        TokenShardLoader(data, "test", batch_size=1, seq_len=4)


def test_manifest_token_count_mismatch(tmp_path):
    data = make_dataset(tmp_path)
    write_shard(data / "syn_train_000002.bin", np.arange(5))  # replaced behind the manifest's back
    with pytest.raises(GPT2Error, match="syn_train_000002.bin: holds 5 tokens"):
        TokenShardLoader(data, "train", batch_size=1, seq_len=4)


def test_reads_seed_npy_shards(tmp_path):
    np.save(tmp_path / "edufineweb_val_000000.npy", np.arange(40, dtype=np.uint16))
    np.save(tmp_path / "edufineweb_train_000001.npy", np.arange(100, 140, dtype=np.uint16))
    loader = TokenShardLoader(tmp_path, "train", batch_size=2, seq_len=4)
    assert loader.next_batch()[1].flatten().tolist() == list(range(101, 109))
