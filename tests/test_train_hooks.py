"""In-loop validation loss, HellaSwag and samples, through the real training loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt2.store.checkpoint import read_meta
from gpt2.store.rundir import latest_checkpoint, read_metrics
from gpt2.train.config import build_config
from gpt2.train.trainer import train
from train_helpers import REPO, prepared_dataset

HELLASWAG = REPO.parent / "shared" / "data" / "hellaswag" / "hellaswag_val.jsonl"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


def hooked_config(data: Path, out: Path, **overrides):
    options = dict(
        size="tiny", data=str(data), out=str(out), steps=2, batch_tokens=64, micro_batch=2, seq_len=32,
        eval_every=2, eval_tokens=256, hellaswag_limit=4, sample_tokens=4, num_samples=2, save_every=0, seed=3,
    )  # fmt: skip
    return build_config({**options, **overrides}, "cpu")


def test_val_loss_hellaswag_and_samples_are_logged(dataset, tmp_path):
    if not HELLASWAG.is_file():
        pytest.skip("../shared/data/hellaswag/hellaswag_val.jsonl not present")
    summary = train(hooked_config(dataset, tmp_path / "run", hellaswag_path=str(HELLASWAG)))
    rows = read_metrics(tmp_path / "run")
    assert [row["type"] for row in rows] == ["train", "train", "eval", "sample", "sample"]
    evaluation = rows[2]
    assert evaluation["step"] == 2 and evaluation["tokens"] == 128 and 9 < evaluation["val_loss"] < 11.5
    assert evaluation["hellaswag_n"] == 4 and 0 <= evaluation["hellaswag_acc_norm"] <= 1
    assert all(row["prompt"] == "Hello, I'm a language model," and isinstance(row["text"], str) for row in rows[3:])
    meta = read_meta(latest_checkpoint(tmp_path / "run"))
    assert meta["val_loss"] == evaluation["val_loss"] and meta["hellaswag_acc_norm"] == evaluation["hellaswag_acc_norm"]
    assert summary["val_loss"] == evaluation["val_loss"]


def test_a_hook_without_its_data_warns_once_and_training_goes_on(dataset, tmp_path, capsys):
    config = hooked_config(dataset, tmp_path / "run", eval_every=1, sample_every=0, hellaswag_path=str(tmp_path / "x"))
    assert train(config)["step"] == 2
    err = capsys.readouterr().err
    assert err.count("warning: in-loop hellaswag disabled: HellaSwag file not found") == 1
    evals = [row for row in read_metrics(tmp_path / "run") if row["type"] == "eval"]
    assert [sorted(row) for row in evals] == [["step", "tokens", "type", "val_loss", "val_tokens"]] * 2
    assert [row["val_tokens"] for row in evals] == [256, 256]  # --eval-tokens 256: 8 windows of 32
    assert read_meta(latest_checkpoint(tmp_path / "run"))["val_tokens"] == 256
