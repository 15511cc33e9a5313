"""Distillation (``gpt2 train --distill-from TEACHER``): the loss against a hand computation, what a run logs, the
student initialised from the teacher's layers, DDP against one process, and kill + resume bitwise."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2.cli import main
from gpt2.evaluate.loss import evaluate_loss
from gpt2.store.load import load
from gpt2.store.rundir import read_metrics
from gpt2.train.distill import soft_target_loss
from gpt2.train.init import initial_model, resolve_config
from gpt2.train.trainer import train
from train_helpers import QUIET, REPO, TINY_RUN, prepared_dataset, start_train, subprocess_env, tiny_config, wait_for

EVAL = dict(eval_every=3, eval_tokens=512)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def teacher(dataset, tmp_path_factory) -> Path:
    """A tiny model trained 30 steps: a run directory (a model source like any other)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    train(tiny_config(dataset, out, steps=30, lr=1e-2, warmup_steps=3))
    return out


def rows(run: Path, kind: str) -> list[dict]:
    return [row for row in read_metrics(run) if row["type"] == kind]


def test_soft_target_loss_is_t_squared_times_the_kl_over_the_real_vocabulary():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 50304, generator=generator) * 3  # padded, as we train
    teacher = torch.randn(2, 3, 50257, generator=generator) * 3  # unpadded, as Hugging Face's GPT-2
    for T in (1.0, 2.0, 4.0):
        p = torch.softmax(teacher.double() / T, dim=-1)
        q = torch.softmax(student[..., :50257].double() / T, dim=-1)
        expected = T**2 * (p * (p.log() - q.log())).sum(-1).mean()  # KL(p || q) per position, mean over the 6
        assert soft_target_loss(student, teacher, T).item() == pytest.approx(expected.item(), rel=1e-5)
    assert soft_target_loss(teacher, teacher, 2.0).abs().item() < 1e-6  # matched distributions cost nothing
    before = soft_target_loss(student, teacher, 2.0)
    student[..., 50257:] = 100.0  # padding logits: never a token of the teacher, so they do not count
    assert torch.equal(soft_target_loss(student, teacher, 2.0), before)


def test_distillation_run_logs_the_loss_parts_and_the_teachers_val_loss(dataset, teacher, tmp_path):
    config = tiny_config(dataset, tmp_path / "student", steps=3, distill_from=str(teacher), distill_alpha=0.3, **EVAL)
    summary = train(config)
    train(tiny_config(dataset, tmp_path / "plain", steps=1))  # the same student, seed and batches, no teacher
    steps = rows(tmp_path / "student", "train")
    for row in steps:  # the logged loss is the mixture of its two logged parts
        assert row["loss"] == pytest.approx(0.3 * row["loss_soft"] + 0.7 * row["loss_hard"], rel=1e-6)
        assert row["loss_soft"] > 0
    assert steps[0]["loss_hard"] == rows(tmp_path / "plain", "train")[0]["loss"]  # the ordinary loss, bitwise
    [evaluation] = rows(tmp_path / "student", "eval")
    expected = evaluate_loss(load(str(teacher)), dataset, split="val", max_tokens=512, batch_size=2, seq_len=32)
    assert evaluation["teacher_val_loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert evaluation["teacher_val_loss"] < evaluation["val_loss"] == summary["val_loss"]
    run = json.loads((tmp_path / "student" / "run.json").read_text())
    student, teacher_model = initial_model(config, False)[0], load(str(teacher))
    assert run["flops_per_token"] == student.flops_per_token(32) + teacher_model.flops_per_token(32) / 3
    assert run["config"]["distill_from"] == str(teacher) and run["config"]["distill_temperature"] == 2.0


def test_a_student_that_is_its_teacher_has_zero_soft_loss(dataset, teacher, tmp_path):
    out = tmp_path / "self"
    train(tiny_config(dataset, out, steps=1, init_from=str(teacher), distill_from=str(teacher), lr=1e-3))
    [row] = rows(out, "train")
    assert row["loss_soft"] < 1e-6  # same weights, same batch: the two distributions are equal
    assert row["loss_hard"] < math.log(50304) - 2  # the teacher's own (trained) next-token loss


def test_init_layers_take_those_blocks_of_the_source(dataset, teacher, tmp_path):
    options = dict(init_from=str(teacher), init_layers="1", data=str(dataset), out=str(tmp_path / "r"), seq_len=32)
    config, source = resolve_config(options, "cpu")
    assert config.model.n_layer == 1 and config.model.n_embd == 64
    reference = load(str(teacher)).state_dict()
    model, record = initial_model(config, False, source=source)
    assert record["layers"] == [1] and record["spec"] == str(teacher)
    state = model.state_dict()
    assert sorted(k for k in state if k.startswith("transformer.h.")) == sorted(
        k.replace("transformer.h.1.", "transformer.h.0.") for k in reference if k.startswith("transformer.h.1.")
    )
    for key, value in state.items():
        source_key = key.replace("transformer.h.0.", "transformer.h.1.")
        expected = reference[source_key][:32] if key == "transformer.wpe.weight" else reference[source_key]
        assert torch.equal(value, expected), key


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--init-from", "{teacher}", "--init-layers", "0,2"], "--init-layers must list distinct blocks of the source"),
        (["--init-from", "{teacher}", "--init-layers", "1,1"], "each in 0..1 (e.g. 0,2,4), got '1,1'"),
        (["--init-layers", "0"], "--init-layers needs --init-from"),
        (["--distill-from", "{teacher}", "--distill-alpha", "1.5"], "--distill-alpha must be in [0, 1], got 1.5"),
        (["--distill-from", "{teacher}", "--distill-temperature", "0"], "--distill-temperature must be positive"),
        (["--distill-from", "{teacher}", "--fused-loss"], "--fused-loss cannot be used with --distill-from"),
        (["--distill-from", "{teacher}", "--seq-len", "32", "--size", "mini"], None),  # a wider student is fine
        (["--distill-from", "{data}"], "--distill-from {data}: "),
    ],
)
def test_bad_distillation_options_are_one_line_before_anything_is_written(
    dataset, teacher, tmp_path, capsys, extra, message
):
    argv = ["train", *TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(tmp_path / "run"), "--steps", "1"]
    argv += [a.format(teacher=teacher, data=dataset) for a in extra]
    if message is None:
        assert main([*argv, "--micro-batch", "1", "--batch-tokens", "32"]) == 0
        return
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message.format(data=dataset) in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ddp_distillation_matches_one_process(dataset, teacher, tmp_path):
    """Two ranks with micro-batch 2 read the tokens one process reads in 2 accumulation steps; each rank runs the
    teacher on its own micro-batch, and the logged loss parts are averaged over ranks."""
    common = [*TINY_RUN, *QUIET, "--data", str(dataset), "--distill-from", str(teacher), "--steps", "3"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gpt2"]
    ddp = subprocess.run(
        [*command, "train", *common, "--out", str(tmp_path / "ddp")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=REPO,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    assert main(["train", *common, "--out", str(tmp_path / "one")]) == 0
    for key in ("loss", "loss_soft", "loss_hard"):
        got = [row[key] for row in rows(tmp_path / "ddp", "train")]
        assert got == pytest.approx([row[key] for row in rows(tmp_path / "one", "train")], rel=1e-5), key


@pytest.mark.slow
def test_kill_and_resume_of_a_distillation_run_is_bitwise(dataset, teacher, tmp_path):
    student = [a for a in TINY_RUN if a not in ("--size", "tiny")]  # the shape: the teacher's, with block 1 only
    args = [*student, *QUIET, "--data", str(dataset), "--distill-from", str(teacher), "--init-from", str(teacher)]
    args += ["--init-layers", "1", "--steps", "8", "--save-every", "3", "--lr", "3e-3", "--dropout", "0.1"]
    runs = {name: tmp_path / name for name in ("full", "killed")}
    procs = {name: start_train([*args, "--out", str(out)], tmp_path / f"{name}.log") for name, out in runs.items()}
    ready = wait_for(lambda: (runs["killed"] / "latest").is_file(), [procs["killed"]])
    procs["killed"].send_signal(signal.SIGKILL)
    codes = {name: proc.wait(timeout=150) for name, proc in procs.items()}
    assert ready and codes == {"full": 0, "killed": -signal.SIGKILL}, (tmp_path / "killed.log").read_text()
    assert len(rows(runs["killed"], "train")) < 8
    resumed = start_train([*args, "--out", str(runs["killed"])], tmp_path / "resume.log")
    assert resumed.wait(timeout=150) == 0, (tmp_path / "resume.log").read_text()
    parts = [{k: row[k] for k in ("step", "loss", "loss_soft", "loss_hard")} for row in rows(runs["full"], "train")]
    assert [{k: row[k] for k in parts[0]} for row in rows(runs["killed"], "train")] == parts  # float equality
    assert [p["step"] for p in parts] == list(range(1, 9))
    assert json.loads((runs["killed"] / "run.json").read_text())["init_from"]["layers"] == [1]
