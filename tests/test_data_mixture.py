"""`--mix`: batches from several prepared datasets in fixed proportions, per DDP rank, resumable bitwise."""

from __future__ import annotations

import json
import signal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2.data import prepare_documents
from gpt2.data.manifest import read_manifest, split_shards
from gpt2.data.mixture import MixtureLoader, parse_mix
from gpt2.data.shards import open_shard
from gpt2.errors import GPT2Error
from train_helpers import QUIET, TINY_RUN, prepared_dataset, start_train, synthetic_texts, train_losses, wait_for

T = 16


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.getbasetemp()
    other = base / "mix-other"
    if not (other / "manifest.json").is_file():
        prepare_documents(synthetic_texts(60, seed=5), other, shard_tokens=3000, val_tokens=500)
    return prepared_dataset(base), other


def train_stream(data_dir: Path) -> np.ndarray:
    """A dataset's train split as one array, read straight from its shard files (the independent reference)."""
    manifest = read_manifest(data_dir)
    return np.concatenate([open_shard(data_dir / s["file"]) for s in split_shards(manifest, "train")])


def test_parse_mix():
    assert parse_mix("a", "b:0.1") == [("a", Fraction(9, 10)), ("b", Fraction(1, 10))]
    assert parse_mix("a", "b:0.25, c:/x:0.5") == [
        ("a", Fraction(1, 4)),
        ("b", Fraction(1, 4)),
        ("c:/x", Fraction(1, 2)),
    ]
    for bad, message in [
        ("b", "'b' is not DIR:WEIGHT"),
        ("b:0", "weight in \\(0, 1\\)"),
        ("b:1", "weight in \\(0, 1\\)"),
        ("b:x", "'b:x' is not DIR:WEIGHT"),
        (":0.1", "':0.1' is not DIR:WEIGHT"),
        ("b:0.6,c:0.5", "add up to 1.1"),
    ]:
        with pytest.raises(GPT2Error, match=message):
            parse_mix("a", bad)


def test_rows_come_from_each_stream_in_order_and_proportions_hold(datasets):
    a, b = datasets
    streams = [train_stream(a), train_stream(b)]
    loader = MixtureLoader(parse_mix(a, f"{b}:0.25"), batch_size=4, seq_len=T)
    positions, taken = [0, 0], [0, 0]
    for step in range(1, 31):
        x, y = loader.next_batch()
        assert x.shape == y.shape == (4, T) and x.dtype == torch.int64
        for row_x, row_y in zip(x, y, strict=True):
            # the row is the next T+1 tokens of one of the streams (the one whose turn it is)
            k = next(k for k in (0, 1) if np.array_equal(row_x, streams[k][positions[k] : positions[k] + T]))
            assert np.array_equal(row_y, streams[k][positions[k] + 1 : positions[k] + T + 1])
            positions[k] += T
            taken[k] += 1
        rows = 4 * step
        assert abs(taken[1] - rows / 4) <= 1 and taken[0] + taken[1] == rows  # the shares hold at every step
    assert taken == [90, 30] and loader.taken == taken


def test_ranks_split_the_global_batch_and_state_resumes(datasets):
    a, b = datasets
    mix = parse_mix(a, f"{b}:0.3")
    single = MixtureLoader(mix, batch_size=6, seq_len=T)
    ranks = [MixtureLoader(mix, batch_size=3, seq_len=T, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(4):  # 24 rows: not a whole period (10 rows) of the schedule, so its state matters
        x, _ = single.next_batch()
        assert torch.equal(x, torch.cat([rank.next_batch()[0] for rank in ranks]))
    state = json.loads(json.dumps(ranks[0].state_dict()))  # through JSON, as in trainer.json
    assert state == ranks[1].state_dict()  # the same on every rank
    resumed = MixtureLoader(mix, batch_size=6, seq_len=T)
    resumed.load_state_dict(state)
    for _ in range(5):
        assert torch.equal(resumed.next_batch()[0], single.next_batch()[0])
    with pytest.raises(GPT2Error, match="trained on the mixture"):
        MixtureLoader(parse_mix(a, f"{b}:0.2"), batch_size=6, seq_len=T).load_state_dict(state)


def test_a_mixed_run_resumes_bitwise_after_sigkill(datasets, tmp_path):
    a, b = datasets
    # checkpoints after 8 and 16 rows: not whole periods (10 rows) of the 0.7/0.3 schedule, so its state matters
    args = [*TINY_RUN, *QUIET, "--data", str(a), "--mix", f"{b}:0.3", "--steps", "6", "--save-every", "2"]
    runs = {name: tmp_path / name for name in ("full", "killed")}
    procs = {name: start_train([*args, "--out", str(out)], tmp_path / f"{name}.log") for name, out in runs.items()}
    ready = wait_for(lambda: (runs["killed"] / "latest").is_file(), [procs["killed"]])
    procs["killed"].kill()
    codes = {name: proc.wait(timeout=150) for name, proc in procs.items()}
    assert ready and codes == {"full": 0, "killed": -signal.SIGKILL}, (tmp_path / "killed.log").read_text()
    assert len(train_losses(runs["killed"])) < 6
    resume = start_train([*args, "--out", str(runs["killed"])], tmp_path / "resume.log")
    assert resume.wait(timeout=150) == 0, (tmp_path / "resume.log").read_text()
    assert train_losses(runs["killed"]) == train_losses(runs["full"])  # float equality: bitwise
    run = json.loads((runs["killed"] / "run.json").read_text())
    assert run["mix"] == [{"data": str(a), "weight": 0.7}, {"data": str(b), "weight": 0.3}]
    assert run["config"]["mix"] == f"{b}:0.3"
    loader = json.loads((runs["full"] / "step_000006" / "trainer.json").read_text())["loader"]
    assert loader["drawn"] == 6 * 2 * 2 and sum(loader["taken"]) == 24 and abs(loader["taken"][1] - 0.3 * 24) <= 1
