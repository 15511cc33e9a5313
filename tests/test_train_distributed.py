"""Multi-process training on CPU/gloo via torchrun: DDP and FSDP2 match a single process with the same global batch.

Two processes with micro-batch 2 and no accumulation read exactly the tokens that one process with
micro-batch 2 and 2 accumulation steps reads (the loader gives rank r the r-th window of each step),
so per-step losses must agree up to float summation order.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2.checkpoint import read_meta
from gpt2.train.config import build_config
from gpt2.train.runlog import read_metrics
from gpt2.train.trainer import train
from train_helpers import QUIET, REPO, prepared_dataset, subprocess_env, train_losses

# constant lr after a 2-step warmup, so a run stopped at step 4 and continued to 6 follows the 6-step schedule
RUN = ["--size", "tiny", "--seq-len", "32", "--micro-batch", "2", "--batch-tokens", "128", "--lr", "3e-3"]
RUN += ["--warmup-steps", "2", "--min-lr-ratio", "1.0", "--save-every", "0", *QUIET]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """The same run in this process: world size 1, 2 accumulation steps of micro-batch 2."""
    out = tmp_path_factory.mktemp("single") / "run"
    options = dict(size="tiny", seq_len=32, micro_batch=2, batch_tokens=128, lr=3e-3, warmup_steps=2, min_lr_ratio=1.0)
    options.update(eval_every=3, eval_tokens=256, hellaswag_every=0, sample_every=0, device="cpu", seed=7)
    train(build_config({**options, "data": str(dataset), "out": str(out), "steps": 6}, "cpu"))
    return out


def torchrun(target: list[str], args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target, *args]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)


def test_ddp_two_processes_match_one_process(dataset, reference, tmp_path):
    out = tmp_path / "ddp"
    # the seed-compatible root script, as in `torchrun --standalone --nproc_per_node=8 train.py`
    args = [*RUN, "--eval-every", "3", "--eval-tokens", "256", "--data", str(dataset), "--out", str(out)]
    result = torchrun(["train.py"], [*args, "--steps", "6"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert train_losses(out) == pytest.approx(train_losses(reference), rel=1e-5, abs=1e-5)
    val = [row["val_loss"] for row in read_metrics(out / "metrics.jsonl") if row["type"] == "eval"]
    ref_val = [row["val_loss"] for row in read_metrics(reference / "metrics.jsonl") if row["type"] == "eval"]
    assert len(val) == 2 and val == pytest.approx(ref_val, rel=1e-5)  # evaluation sharded over ranks, all-reduced
    assert result.stdout.count("step 6/6") == 1  # only rank 0 prints (and writes)
    meta = read_meta(out / "step_000006")
    assert meta["step"] == 6 and meta["tokens"] == 6 * 128


def test_fsdp_two_processes_match_and_resume(dataset, reference, tmp_path):
    out = tmp_path / "fsdp"
    common = [*RUN, "--fsdp", "--data", str(dataset), "--out", str(out)]
    # the in-loop hooks need every rank in each forward pass of a sharded model: run them too
    hooks = ["--eval-every", "4", "--eval-tokens", "256", "--sample-every", "4", "--sample-tokens", "4"]
    first = torchrun(["-m", "gpt2", "train"], [*common, *hooks, "--steps", "4"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = read_metrics(out / "metrics.jsonl")
    assert [row["type"] for row in rows[4:]] == ["eval", "sample", "sample"] and rows[4]["val_loss"] < 11
    # keep a copy of the FSDP checkpoint of step 4 to continue in a single process without FSDP
    single = tmp_path / "single"
    single.mkdir()
    shutil.copytree(out / "step_000004", single / "step_000004")
    (single / "latest").write_text("step_000004\n")
    # continue the FSDP run under FSDP: rank 0 reads the full state, it is broadcast and re-sharded
    second = torchrun(["-m", "gpt2", "train"], [*common, "--steps", "6"])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in second.stdout
    expected = train_losses(reference)
    assert train_losses(out) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    # an FSDP checkpoint is an ordinary checkpoint: one process without FSDP continues it
    options = dict(size="tiny", seq_len=32, micro_batch=2, batch_tokens=128, lr=3e-3, warmup_steps=2, min_lr_ratio=1.0)
    options.update(eval_every=0, hellaswag_every=0, sample_every=0, device="cpu", seed=7)
    train(build_config({**options, "data": str(dataset), "out": str(single), "steps": 6}, "cpu"))
    assert train_losses(single) == pytest.approx(expected[4:], rel=1e-5, abs=1e-5)


def test_single_process_context_and_devices(monkeypatch):
    from gpt2 import GPT2Error
    from gpt2.train.distributed import all_reduce_mean, any_rank, resolve_device, setup_distributed

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = setup_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    value = torch.tensor(2.5)
    assert all_reduce_mean(value, ctx) is value and any_rank(True, ctx) and not any_rank(False, ctx)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(GPT2Error, match="CUDA is not available"):
            resolve_device("cuda:1")
