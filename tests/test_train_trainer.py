"""The training loop end to end on a tiny model: learning, exact resume, signals, the NaN guard."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.cli import main
from gpt2.store.checkpoint import load_checkpoint, read_meta
from gpt2.store.rundir import latest_checkpoint, read_metrics
from gpt2.train.trainer import train
from train_helpers import QUIET, TINY_RUN, prepared_dataset, start_train, tiny_config, train_losses, wait_for


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


def test_tiny_model_learns_on_wikipedia_slice(tmp_path_factory, tmp_path):
    data = prepared_dataset(tmp_path_factory.getbasetemp(), wiki_only=True)
    if data is None:
        pytest.skip("../shared/data/wiki/enwiki_sample.jsonl not present: no Wikipedia slice to train on")
    config = tiny_config(data, tmp_path / "run", steps=12, micro_batch=4, lr=1e-2, eval_every=12, eval_tokens=1024)
    summary = train(config)
    losses = train_losses(tmp_path / "run")
    print("tiny model on the Wikipedia slice, per-step train loss:", [round(x, 3) for x in losses])
    assert len(losses) == 12 and summary["step"] == 12
    assert losses[0] == pytest.approx(math.log(50304), abs=0.3)  # a fresh model is ~uniform over the vocab
    assert sum(losses[-4:]) / 4 < losses[0] - 1.2, losses
    evals = [row for row in read_metrics(tmp_path / "run") if row["type"] == "eval"]
    assert [row["step"] for row in evals] == [12]
    assert evals[0]["val_loss"] < losses[0] - 1.0
    meta = read_meta(latest_checkpoint(tmp_path / "run"))
    assert meta["step"] == 12 and meta["tokens"] == 12 * 128 and meta["val_loss"] == evals[0]["val_loss"]


def test_metrics_rows_and_checkpoint_contents(dataset, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(dataset, out, steps=4, save_every=2, keep_last=1))
    rows = read_metrics(out)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        assert row["type"] == "train" and row["tokens"] == row["step"] * 128 and row["mfu"] is None
        assert row["loss"] > 0 and row["grad_norm"] > 0 and row["tok_per_s"] > 0 and row["dt_ms"] > 0
    assert rows[0]["lr"] == pytest.approx(1.5e-3)  # warmup: lr * (0 + 1) / 2
    # keep-last 1: only the final checkpoint survives, and `latest` names it
    assert sorted(p.name for p in out.glob("step_*")) == ["step_000004"]
    assert (out / "latest").read_text().strip() == "step_000004"
    files = {p.name for p in (out / "step_000004").iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "meta.json",
        "optimizer.safetensors",
        "rng.json",
        "trainer.json",
    } <= files
    trainer_state = json.loads((out / "step_000004" / "trainer.json").read_text())
    assert trainer_state["step"] == 4 and trainer_state["loader"]["position"] == 4 * 128
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 1 and run["grad_accum"] == 2 and run["config"]["lr"] == 3e-3
    import gpt2

    model = gpt2.load(out)  # the run directory loads as its latest model
    assert isinstance(model, GPT) and model.config == GPTConfig.named("tiny")


def test_tokens_count_what_was_consumed_across_a_resume_with_another_batch(dataset, tmp_path):
    """Issue 28.14: 2 steps of 128 tokens, then 2 of 256 (a resume with another --batch-tokens) read 768 tokens,
    not 4 x 256 (the step count times the new batch)."""
    out = tmp_path / "run"
    train(tiny_config(dataset, out, steps=2, save_every=2))
    train(tiny_config(dataset, out, steps=4, batch_tokens=256))
    assert [row["tokens"] for row in read_metrics(out)] == [128, 256, 512, 768]
    assert read_meta(out / "step_000004")["tokens"] == 768
    trainer_state = json.loads((out / "step_000004" / "trainer.json").read_text())
    assert trainer_state["tokens"] == trainer_state["loader"]["position"] == 768  # what the loader handed out


def _poison_forward(model: GPT, calls: set[int]):
    """Make the logits NaN on the given (1-based) forward calls: a real numerical blow-up, seen by the real loop."""
    counter = {"n": 0}

    def hook(module, inputs, output):
        counter["n"] += 1
        return output * float("nan") if counter["n"] in calls else output

    model.lm_head.register_forward_hook(hook)


def test_non_finite_loss_skips_update_then_recovers(dataset, tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("tiny"))
    _poison_forward(model, {3, 4, 6})  # 2 micro-steps per step: steps 2 and 3 blow up
    summary = train(tiny_config(dataset, tmp_path / "run", steps=5, max_bad_steps=3), model=model)
    rows = read_metrics(tmp_path / "run")
    assert [row.get("skipped", False) for row in rows] == [False, True, True, False, False]
    assert rows[1]["loss"] is None and rows[3]["loss"] > 0
    assert summary["step"] == 5 and all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_loss_aborts_after_max_bad_steps(dataset, tmp_path):
    model = GPT(GPTConfig.named("tiny"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _poison_forward(model, set(range(1, 100)))
    with pytest.raises(GPT2Error, match=r"diverged: non-finite loss/gradients for 3 steps in a row \(up to step 3\)"):
        train(tiny_config(dataset, tmp_path / "run", steps=10, max_bad_steps=3), model=model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no update was applied
    assert len(read_metrics(tmp_path / "run")) == 3


# ---------------------------------------------------------------- signals and exact resume (subprocesses)


@pytest.fixture(scope="module")
def interrupted_runs(dataset, tmp_path_factory):
    """Three identical runs: uninterrupted, SIGKILLed after its step-3 checkpoint, SIGTERMed after step 1;
    the last two are then resumed to the end."""
    base = tmp_path_factory.mktemp("resume")
    args = [*TINY_RUN, *QUIET, "--data", str(dataset), "--steps", "10", "--save-every", "3", "--keep-last", "2"]
    args += ["--lr", "3e-3", "--warmup-steps", "2"]
    runs = {name: base / name for name in ("full", "killed", "termed")}
    procs = {name: start_train([*args, "--out", str(out)], base / f"{name}.log") for name, out in runs.items()}
    # SIGTERM as soon as the first step is logged; SIGKILL once step_000003 is complete and pointed to.
    termed_started = wait_for(lambda: len(train_losses(runs["termed"])) >= 1, [procs["termed"]])
    procs["termed"].send_signal(signal.SIGTERM)
    killed_ready = wait_for(lambda: (runs["killed"] / "latest").is_file(), [procs["killed"]])
    procs["killed"].kill()
    codes = {name: proc.wait(timeout=150) for name, proc in procs.items()}
    assert termed_started and killed_ready, {name: (base / f"{name}.log").read_text() for name in runs}
    info = {
        "codes": codes,
        "termed_step": read_meta(latest_checkpoint(runs["termed"]))["step"],
        "termed_trainer_state": (latest_checkpoint(runs["termed"]) / "trainer.json").is_file(),
        "killed_rows_before_resume": len(train_losses(runs["killed"])),
        "killed_latest": (runs["killed"] / "latest").read_text().strip(),
        "termed_log": (base / "termed.log").read_text(),
    }
    resumed = {
        name: start_train([*args, "--out", str(runs[name])], base / f"{name}-resume.log")
        for name in ("killed", "termed")
    }
    info["resume_codes"] = {name: proc.wait(timeout=150) for name, proc in resumed.items()}
    info["resume_logs"] = {name: (base / f"{name}-resume.log").read_text() for name in resumed}
    return runs, info


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(interrupted_runs):
    runs, info = interrupted_runs
    assert info["codes"]["termed"] == 0, info["termed_log"]
    assert "SIGTERM received" in info["termed_log"]
    step = info["termed_step"]
    assert 1 <= step < 10 and (runs["termed"] / "latest").is_file()
    assert info["termed_trainer_state"]  # a full training checkpoint, not just a model


def test_resume_after_sigkill_reproduces_losses_bitwise(interrupted_runs):
    runs, info = interrupted_runs
    assert info["codes"]["killed"] == -signal.SIGKILL and info["codes"]["full"] == 0
    assert info["killed_rows_before_resume"] < 10  # really killed mid-run
    assert info["resume_codes"]["killed"] == 0, info["resume_logs"]["killed"]
    assert "resumed from" in info["resume_logs"]["killed"]
    full, resumed = train_losses(runs["full"]), train_losses(runs["killed"])
    assert len(full) == 10 and [row["step"] for row in read_metrics(runs["killed"])] == list(range(1, 11))
    assert resumed == full  # float equality of every per-step loss: bitwise identical
    times = [row["time"] for row in read_metrics(runs["killed"])]
    assert times == sorted(times)  # training time continues across the restart
    a, b = load_checkpoint(runs["full"] / "step_000010"), load_checkpoint(runs["killed"] / "step_000010")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_resume_after_sigterm_reproduces_losses_bitwise(interrupted_runs):
    runs, info = interrupted_runs
    assert info["resume_codes"]["termed"] == 0, info["resume_logs"]["termed"]
    assert train_losses(runs["termed"]) == train_losses(runs["full"])
    run = json.loads((runs["termed"] / "run.json").read_text())
    assert [r["step"] for r in run["resumes"]] == [info["termed_step"]]


def test_resume_continues_a_finished_run_when_steps_grow(dataset, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(dataset, out, steps=2))
    assert main(["train", *TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(out), "--steps", "3"]) == 0
    assert [row["step"] for row in read_metrics(out)] == [1, 2, 3]


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(dataset, tmp_path, monkeypatch):
    import errno

    from gpt2.store import checkpointer

    real_save = checkpointer.save_tensor_tree
    calls = {"n": 0}

    def filling_disk(directory, name, tree):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (optimizer + rng trees) fits, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(directory, name, tree)

    monkeypatch.setattr(checkpointer, "save_tensor_tree", filling_disk)
    out = tmp_path / "run"
    with pytest.raises(
        GPT2Error, match=r"step 4 .* failed: no space left on the disk mounted at .*; the previous checkpoint is intact"
    ):
        train(tiny_config(dataset, out, steps=6, save_every=2))
    assert (out / "latest").read_text().strip() == "step_000002"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".step", "step"))) == ["step_000002"]
    assert load_checkpoint(out / "step_000002") is not None and read_meta(out / "step_000002")["step"] == 2


def test_fused_loss_trains_like_the_plain_loss(dataset, tmp_path):
    train(tiny_config(dataset, tmp_path / "plain", steps=4))
    train(tiny_config(dataset, tmp_path / "fused", steps=4, fused_loss=True))
    plain, fused = train_losses(tmp_path / "plain"), train_losses(tmp_path / "fused")
    assert len(fused) == 4 and fused[-1] < fused[0]
    assert fused == pytest.approx(plain, rel=1e-4)  # float rounding apart, the same updates
    assert json.loads((tmp_path / "fused" / "run.json").read_text())["config"]["fused_loss"] is True
