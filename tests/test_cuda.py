"""The GPU path end to end: bf16 autocast, torch.compile with in-loop evaluation and sampling, NCCL DDP,
checkpoints from that wrapper stack, exact resume, and KV-cache decoding (``pytest -m cuda tests/test_cuda.py``).

Every test skips with a reason where torch sees no CUDA GPU (this module then costs nothing in the
normal suite); ``scripts/gpu-check.sh`` runs it on a lent GPU within a few minutes. Sizes are tiny:
what takes time is process start-up and compiling (tens of seconds for each ``--compile`` process).
The data is the Wikipedia slice when ``../shared`` is there, else synthetic text (the GPU machine).
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import gpt2
from evaluate_helpers import ITEMS, write_jsonl
from gpt2.generate import generate, generate_token_ids
from gpt2.generate.sampling import SamplingOptions
from gpt2.store.rundir import read_metrics
from train_helpers import REPO, prepared_dataset, subprocess_env, train_losses

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

TINY = ["--size", "tiny", "--seq-len", "32", "--device", "cuda", "--seed", "7"]
NO_HOOKS = ["--eval-every", "0", "--hellaswag-every", "0", "--sample-every", "0"]
TORCHRUN_1 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
GPT2 = [sys.executable, "-m", "gpt2"]


def run(command: list[str], timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = env or subprocess_env()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command[:6])}...\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def compiled_run(dataset, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """8 steps of ``torchrun --nproc_per_node=1 -m gpt2 train --compile`` with every in-loop hook on (a 3-item
    HellaSwag file) and checkpoints at steps 4 and 8: the stack a 1-GPU ``gpt2 train`` really builds."""
    base = tmp_path_factory.mktemp("compiled")
    hellaswag = write_jsonl(base / "hellaswag.jsonl", ITEMS)
    out = base / "run"
    args = [*TINY, "--compile", "--micro-batch", "4", "--batch-tokens", "256", "--steps", "8", "--warmup-steps", "2"]
    args += ["--save-every", "4"]
    args += ["--eval-every", "4", "--eval-tokens", "1024", "--hellaswag-path", str(hellaswag), "--hellaswag-limit", "3"]
    args += ["--sample-every", "8", "--sample-tokens", "8", "--num-samples", "2", "--data", str(dataset)]
    return out, run([*TORCHRUN_1, "-m", "gpt2", "train", *args, "--out", str(out)], timeout=400)


def test_bf16_autocast_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig.named("tiny")).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    tokens = torch.randint(0, 50257, (8, 65), device="cuda")
    losses = []
    for _ in range(25):  # memorising one batch: the loss must fall fast
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, loss = model(tokens[:, :-1], tokens[:, 1:])
        assert logits.dtype == torch.bfloat16  # autocast really ran the output layer in bf16
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32


def test_kv_cache_greedy_tokens_equal_full_recompute():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: both paths in true fp32
    try:
        torch.manual_seed(0)
        model = gpt2.GPT(gpt2.GPTConfig.named("124M")).cuda().eval()
        prompt = gpt2.get_tokenizer().encode("The history of natural language processing generally started in")
        options = SamplingOptions(max_new_tokens=48, temperature=0, num_samples=2)

        def decode(use_cache: bool) -> list[list[int]]:
            steps = generate_token_ids(model, prompt, options, device="cuda", stop_at_eot=False, use_cache=use_cache)
            return list(steps)

        cached, recomputed = decode(True), decode(False)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert len(cached) == 48 and cached == recomputed


# Deterministic CUDA kernels (cuBLAS workspace, deterministic scatter-add in the embedding backward), then
# `python -m gpt2` itself. warn_only: an op without a deterministic kernel warns instead of aborting the run.
DETERMINISTIC_GPT2 = (
    "import runpy, sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
    "sys.argv = ['gpt2', *sys.argv[1:]]; runpy.run_module('gpt2', run_name='__main__')"
)


def test_resume_after_sigkill_on_gpu_reproduces_losses_bitwise(dataset, tmp_path):
    env = {**subprocess_env(), "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    command = [sys.executable, "-c", DETERMINISTIC_GPT2, "train", *TINY, "--no-compile", *NO_HOOKS]
    command += ["--micro-batch", "2", "--batch-tokens", "128", "--steps", "300", "--save-every", "10"]
    command += ["--keep-last", "2", "--data", str(dataset)]

    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("full", "killed")}

    def start(name: str) -> subprocess.Popen:
        out = ["--out", str(tmp_path / name)]
        return subprocess.Popen([*command, *out], stdout=logs[name], stderr=subprocess.STDOUT, env=env, cwd=REPO)

    full, killed = start("full"), start("killed")  # side by side: one GPU holds both tiny runs
    metrics, deadline = tmp_path / "killed" / "metrics.jsonl", time.monotonic() + 120
    while killed.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text().count('"train"') >= 25:  # past the step-20 checkpoint
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    code = killed.wait(timeout=60)
    assert code == -signal.SIGKILL, f"not killed mid-run (exit {code}): {(tmp_path / 'killed.log').read_text()[-2000:]}"
    assert len(train_losses(tmp_path / "killed")) < 300
    assert full.wait(timeout=180) == 0, (tmp_path / "full.log").read_text()[-3000:]
    for log in logs.values():
        log.close()
    resumed = run([*command, "--out", str(tmp_path / "killed")], env=env)
    assert "resumed from" in resumed.stdout
    uninterrupted, again = train_losses(tmp_path / "full"), train_losses(tmp_path / "killed")
    assert len(again) == len(uninterrupted) == 300
    mismatches = [(i + 1, a, b) for i, (a, b) in enumerate(zip(again, uninterrupted, strict=True)) if a != b]
    assert not mismatches, mismatches[:5]  # float equality of every per-step loss: bitwise identical


def test_compiled_run_logs_val_loss_hellaswag_and_samples(compiled_run):
    out, result = compiled_run
    assert "warning: in-loop" not in result.stderr, result.stderr[-2000:]  # no hook switched itself off
    info = json.loads((out / "run.json").read_text())
    assert info["compile"] is True and info["dtype"] == "bfloat16" and info["world_size"] == 1
    rows = read_metrics(out)
    evals = {row["step"]: row for row in rows if row["type"] == "eval"}
    assert sorted(evals) == [4, 8]
    for row in evals.values():
        assert math.isfinite(row["val_loss"]) and 0 < row["val_loss"] < 12
        assert row["hellaswag_n"] == 3 and 0 <= row["hellaswag_acc_norm"] <= 1
    samples = [row for row in rows if row["type"] == "sample"]
    assert [row["step"] for row in samples] == [8, 8] and all(row["text"] for row in samples)
    losses = train_losses(out)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_checkpoint_of_compiled_run_loads_and_reproduces_its_val_loss(compiled_run, dataset):
    out, _ = compiled_run
    in_loop = [row["val_loss"] for row in read_metrics(out) if row["type"] == "eval"][-1]
    # gpt2.load refuses a state dict with torch.compile's "_orig_mod." or DDP's "module." prefixes (strict keys)
    flags = ["--data", str(dataset), "--tokens", "1024", "--seq-len", "32", "--batch-size", "4", "--device", "cuda"]
    result = run([*GPT2, "eval", "loss", "--model", str(out), *flags, "--json"])
    # the same tokens, batches and bf16 autocast as the trainer's in-loop evaluation of the step-8 weights
    assert json.loads(result.stdout.strip().splitlines()[-1])["loss"] == pytest.approx(in_loop, rel=1e-4)
    model = gpt2.load(out, "cuda")
    texts = generate(model, "Hello", max_new_tokens=8, num_samples=2, seed=0, device="cuda")
    assert len(texts) == 2 and all(texts)
    # sampling through a compiled wrapper is sampling from the module inside it
    assert generate(torch.compile(model), "Hello", max_new_tokens=8, num_samples=2, seed=0, device="cuda") == texts


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    import gpt2

    dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig.named("tiny")).cuda()
    runner = DDP(torch.compile(model), device_ids=[0])  # the order of gpt2.runtime.parallel.wrap_model
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    tokens = torch.randint(0, 50257, (4, 33), device="cuda")
    losses = []
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = runner(tokens[:, :-1], tokens[:, 1:])[1]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    gpt2.save_model(sys.argv[1], model)  # what the trainer saves: the plain module under the wrappers
    loaded = gpt2.load(sys.argv[1], "cuda")
    same = [torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values())]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        # the compiled graph of the loop (grad mode on, no backward: no recompilation), then eager from the file
        loss_runner = runner(tokens[:, :-1], tokens[:, 1:])[1].item()
        with torch.no_grad():
            loss_loaded = loaded(tokens[:, :-1], tokens[:, 1:])[1].item()
    print(json.dumps({
        "backend": dist.get_backend(), "losses": losses, "wrapped_key": next(iter(runner.state_dict())),
        "weights_equal": all(same) and len(same) == len(loaded.state_dict()),
        "loss_runner": loss_runner, "loss_loaded": loss_loaded,
    }))
    dist.destroy_process_group()
    """
)


def test_nccl_ddp_over_compiled_model_trains_saves_and_loads_equal(tmp_path):
    script = tmp_path / "ddp_check.py"
    script.write_text(DDP_SCRIPT)
    result = run([*TORCHRUN_1, str(script), str(tmp_path / "model")], timeout=300)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "nccl"
    assert report["wrapped_key"].startswith("module._orig_mod.")  # really DDP over torch.compile
    assert all(math.isfinite(x) for x in report["losses"]) and report["losses"][-1] < report["losses"][0]
    assert report["weights_equal"]
    # the same function: compiled bf16 kernels and eager ones differ only by rounding
    assert report["loss_loaded"] == pytest.approx(report["loss_runner"], rel=1e-2)
