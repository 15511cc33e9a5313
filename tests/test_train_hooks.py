"""In-loop validation loss, HellaSwag and samples, through the real training loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt2.store.checkpoint import read_meta
from gpt2.store.rundir import latest_checkpoint, read_metrics
from gpt2.train.recipes import build_config
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
    assert 1 < evaluation["val_bpb"] < 10  # ~10.8 nats/token over ~4 bytes/token, in bits
    assert evaluation["hellaswag_n"] == 4 and 0 <= evaluation["hellaswag_acc_norm"] <= 1
    assert all(row["prompt"] == "Hello, I'm a language model," and isinstance(row["text"], str) for row in rows[3:])
    meta = read_meta(latest_checkpoint(tmp_path / "run"))
    assert meta["val_loss"] == evaluation["val_loss"] and meta["hellaswag_acc_norm"] == evaluation["hellaswag_acc_norm"]
    assert meta["val_bpb"] == evaluation["val_bpb"]
    assert summary["val_loss"] == evaluation["val_loss"]


def test_a_hook_without_its_data_warns_once_and_training_goes_on(dataset, tmp_path, capsys):
    config = hooked_config(dataset, tmp_path / "run", eval_every=1, sample_every=0, hellaswag_path=str(tmp_path / "x"))
    assert train(config)["step"] == 2
    err = capsys.readouterr().err
    assert err.count("warning: in-loop hellaswag disabled: HellaSwag file not found") == 1
    evals = [row for row in read_metrics(tmp_path / "run") if row["type"] == "eval"]
    assert [sorted(row) for row in evals] == [["step", "tokens", "type", "val_bpb", "val_loss", "val_tokens"]] * 2
    assert [row["val_tokens"] for row in evals] == [256, 256]  # --eval-tokens 256: 8 windows of 32
    assert read_meta(latest_checkpoint(tmp_path / "run"))["val_tokens"] == 256


def test_a_slot_registered_from_outside_reaches_every_output(dataset, tmp_path, monkeypatch, capsys):
    """A new evaluation is one Slot: metrics.jsonl, the console, meta.json, the summary, report and plot show it."""
    from gpt2.evaluate import slots
    from gpt2.report import read_run, write_report
    from gpt2.report.plot import panel_layout

    seen = []

    def answer(model, context):
        seen.append((model.training, context.config.steps))
        return {"answer": 0.25 * len(seen), "answer_items": 7}

    oracle = slots.Metric("answer", "the answer", True, ((0.5, "oracle"),))
    monkeypatch.setattr(slots, "SLOTS", [*slots.SLOTS, slots.Slot("answer", lambda cfg: 1, answer, (oracle,))])
    run = tmp_path / "run"
    summary = train(hooked_config(dataset, run, eval_every=0, sample_every=0))
    assert seen == [(False, 2), (False, 2)]  # every step, in eval mode
    evals = [row for row in read_metrics(run) if row["type"] == "eval"]
    assert evals == [
        {"type": "eval", "step": 1, "tokens": 64, "answer": 0.25, "answer_items": 7},
        {"type": "eval", "step": 2, "tokens": 128, "answer": 0.5, "answer_items": 7},
    ]
    assert "eval step 2 | answer 0.5000 | answer_items 7" in capsys.readouterr().out
    assert read_meta(latest_checkpoint(run))["answer"] == 0.5 and summary["answer"] == 0.5
    report = write_report(run).read_text()
    assert "| final the answer | 0.5000 (step 2; best 0.5000; oracle: 0.5) |" in report
    assert "| final answer_items | 7 (step 2) |" in report
    assert panel_layout([read_run(run)]) == [["loss", "loss"], ["lr", "tps"], ["answer", "answer_items"]]
