"""``python -m tools.gpu_check STAGE``: the GPU check's benchmarks, one stage at a time, each result saved at once.

Stages (:data:`STAGES`, in the order ``scripts/gpu-check.sh`` runs them, each under its own time limit):

* ``env``: the card, driver, torch/CUDA versions, the data-sheet bf16 peak and a measured bf16
  matmul ceiling (8192^3, the figure METHOD.md asks for before any MFU claim);
* ``train124``: 124M at T=1024: the real ``Trainer`` step with ``torch.compile`` + bf16 autocast + fused
  AdamW (as ``python -m tools.bench train`` times it, :func:`tools.bench.train.make_train_step`) at micro-batch
  16/32/64: tok/s, MFU against the data-sheet peak (:mod:`gpt2.train.mfu`), peak memory; if the best MFU is
  under 50 %, a ``torch.profiler`` summary of one step (top ops by self CUDA time);
* ``hellaswag``: items/s of the batched scorer on 124M (:func:`tools.bench.eval.run`);
* ``generate``: KV-cache decoding tok/s, 124M at batch 1 and 8, 1558M (random weights) at batch 1,
  against the same model without a cache (:func:`tools.bench.generate.decoders`);
* ``train350`` / ``train774``: one training point each (micro-batch 16).

``--dry-run`` takes the same code path on the CPU with the ``tiny`` model and seconds-long stages.
Run one stage: ``python -m tools.gpu_check STAGE --out DIR [--dry-run]``; ``scripts/gpu-check.sh`` runs them all.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpt2.errors import GPT2Error
from gpt2.train.mfu import device_peak_flops, model_flops_utilization
from tools.bench.core import BenchResult, median_seconds
from tools.bench.memory import peak_memory_bytes
from tools.gpu_check_report import Recorder

MFU_TARGET = 0.5  # the goal for 124M on an H100-class card
TARGET_NAME = "tok/s at 50% MFU of the data-sheet peak"
MIB = 2**20


@dataclass(frozen=True)
class Plan:
    """Where and how big: the device, whether this is the CPU dry run, timed repeats per figure."""

    device: torch.device
    dry_run: bool
    repeat: int = 10

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


# ---------------------------------------------------------------- env


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine_facts(plan: Plan) -> dict[str, Any]:
    """What the Markdown's header names: card, driver, versions, the peak MFU is measured against."""
    facts: dict[str, Any] = {
        "device": str(plan.device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "peak_flops": device_peak_flops(plan.device),
        "peak_flops_source": "data sheet, dense bf16 (gpt2.train.mfu)",
    }
    if plan.cuda:
        props = torch.cuda.get_device_properties(plan.device)
        facts.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            driver=_driver_version(),
            cudnn=torch.backends.cudnn.version(),
        )
    return facts


def stage_env(plan: Plan, rec: Recorder, stage: str) -> None:
    rec.data["machine"] = machine_facts(plan)
    n = 512 if plan.dry_run else 8192
    dtype = torch.bfloat16 if plan.cuda else torch.float32
    # random operands: zeros run faster and would overstate the ceiling (METHOD.md)
    a, b = (torch.randn(n, n, device=plan.device, dtype=dtype) for _ in range(2))

    def matmul() -> None:
        a @ b
        plan.synchronize()

    seconds = median_seconds(matmul, repeat=plan.repeat, warmup=3)
    measured = 2 * n**3 / seconds / 1e12
    peak = (rec.data["machine"]["peak_flops"] or float("nan")) / 1e12  # NaN (null in the JSON) on the CPU
    extra = {"n": n, "dtype": str(dtype).removeprefix("torch.")}
    result = BenchResult(f"matmul {n}^3", measured, peak, "TFLOP/s", measured / peak, "data-sheet peak", extra)
    rec.result(stage, result)


# ---------------------------------------------------------------- training


def profile_step(step: Callable[[], None], plan: Plan, top: int = 15) -> dict[str, Any]:
    """Where one step's time goes: the ``top`` ops by self device time (CPU time on the dry run)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if plan.cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        step()
    wall_us = 1e6 * (time.perf_counter() - t0)
    events = list(prof.key_averages())

    def self_us(event: Any) -> float:
        if not plan.cuda:
            return event.self_cpu_time_total
        # renamed from self_cuda_time_total in torch 2.4; keep both for older CUDA builds
        return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)

    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:top]
    ops = [{"op": e.key, "self_ms": self_us(e) / 1000, "share": self_us(e) / total, "calls": e.count} for e in ranked]
    clock = "device" if plan.cuda else "CPU"
    summary = (
        f"{clock} busy {total / 1000:.1f} ms of a {wall_us / 1000:.1f} ms step under the profiler "
        f"({100 * total / wall_us:.0f}%); shares are of the {clock} time"
    )
    return {"summary": summary, "device_ms": total / 1000, "wall_ms": wall_us / 1000, "ops": ops}


def measure_training(plan: Plan, size: str, batch: int, seq: int, repeat: int, warmup: int, workdir: Path):
    """(result, step closure): tok/s, MFU and peak memory of the trainer's compiled bf16 step (on the dry run: fp32
    eager), as ``python -m tools.bench train`` times it; its random-token dataset lives in ``workdir``."""
    from gpt2.model import GPT
    from tools.bench.train import TrainCase, case_config, make_train_step

    config = case_config(TrainCase(size, batch, seq, repeat))
    holder: dict[str, Any] = {}

    def timed() -> None:
        holder["step"] = step = make_train_step("ours", config, batch, seq, plan.device, workdir)
        holder["seconds"] = median_seconds(step, repeat=repeat, warmup=warmup)  # warm-up compiles

    peak_bytes = peak_memory_bytes(timed, plan.device)
    tok_s = batch * seq / holder["seconds"]
    with torch.device("meta"):
        flops_per_token = GPT(config).flops_per_token(seq)
    peak = device_peak_flops(plan.device)
    target = MFU_TARGET * peak / flops_per_token if peak else float("nan")
    extra = {
        "size": size,
        "batch": batch,
        "seq_len": seq,
        "repeat": repeat,
        "compile": plan.cuda,
        "dtype": "bf16-autocast" if plan.cuda else "fp32",
        "fused_adamw": plan.cuda,
        "mfu": model_flops_utilization(flops_per_token, tok_s, peak),
        "flops_per_token": flops_per_token,
        "peak_memory_mib": peak_bytes / MIB,
        "seconds_per_step": holder["seconds"],
    }
    name = f"train {size} B={batch} T={seq}"
    return BenchResult(name, tok_s, target, "tok/s", tok_s / target, TARGET_NAME, extra), holder["step"]


def _release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stage_train124(plan: Plan, rec: Recorder, stage: str) -> None:
    """Largest micro-batch first (``gpt2 train``'s 124M default, 64): each point compiles anew (tens of
    seconds), so if the stage runs out of time it is the smaller batches that are missing."""
    size, seq, batches = ("tiny", 64, (4, 2, 1)) if plan.dry_run else ("124M", 1024, (64, 32, 16))
    with tempfile.TemporaryDirectory(prefix="gpt2-gpu-check-") as workdir:
        for i, batch in enumerate(batches):
            _release()
            warmup = 1 if plan.dry_run else 3
            result, step = measure_training(plan, size, batch, seq, plan.repeat, warmup, Path(workdir))
            rec.result(stage, result)
            mfu = result.extra["mfu"]
            if i == 0 and (mfu is None or mfu < MFU_TARGET):  # no peak known (the CPU) counts as short
                profile = profile_step(step, plan)
                short = (
                    "no GPU peak to compare with" if mfu is None else f"MFU {100 * mfu:.1f}% < {100 * MFU_TARGET:.0f}%"
                )
                profile["what"] = f"{result.name}: {short}"
                rec.note(stage, "profile", profile)
            del step


def _one_training_point(size: str) -> Callable[[Plan, Recorder, str], None]:
    def stage_fn(plan: Plan, rec: Recorder, stage: str) -> None:
        size_, batch, seq = ("tiny", 2, 64) if plan.dry_run else (size, 16, 1024)
        with tempfile.TemporaryDirectory(prefix="gpt2-gpu-check-") as workdir:
            result = measure_training(plan, size_, batch, seq, max(1, plan.repeat // 2), 2, Path(workdir))[0]
        rec.result(stage, result)

    return stage_fn


# ---------------------------------------------------------------- evaluation and generation


def stage_hellaswag(plan: Plan, rec: Recorder, stage: str) -> None:
    from tools.bench import eval as bench_eval

    # CUDA: 124M, 512 items, bf16, against the one-item-per-forward loop; dry run: tiny, 4 items
    for result in bench_eval.run(device=str(plan.device), repeat=min(plan.repeat, 3), quick=plan.dry_run):
        rec.result(stage, result)


def stage_generate(plan: Plan, rec: Recorder, stage: str) -> None:
    from gpt2.config import GPTConfig
    from gpt2.model import GPT
    from gpt2.tokenizer import get_tokenizer
    from tools.bench.generate import NO_CACHE_NAME, PROMPT, decoders

    prompt_len, new_tokens = (8, 16) if plan.dry_run else (32, 256)
    cases = [("tiny", 1), ("tiny", 2), ("tiny", 1)] if plan.dry_run else [("124M", 1), ("124M", 8), ("1558M", 1)]
    prompt_ids = (get_tokenizer().encode(PROMPT) * 4)[:prompt_len]
    for size, batch in cases:
        _release()
        torch.manual_seed(0)
        with torch.device(plan.device):  # random weights, built in place: 1558M in fp32 is 6 GB
            model = GPT(GPTConfig.named(size)).eval()
        fns = decoders(model, None, prompt_ids, new_tokens, batch, plan.device)  # no HF twin: "ours" and "no_cache"
        repeat = 1 if size == "1558M" else min(plan.repeat, 3)  # a 1558M run of 256 tokens is seconds long
        cached = batch * new_tokens / median_seconds(fns["ours"], repeat=repeat, warmup=1)
        no_cache = batch * new_tokens / median_seconds(fns["no_cache"], repeat=1, warmup=0)
        extra = {"size": size, "batch": batch, "prompt_tokens": prompt_len, "new_tokens": new_tokens, "dtype": "fp32"}
        name = f"generate {size} B={batch}"
        rec.result(stage, BenchResult(name, cached, no_cache, "new tokens/s", cached / no_cache, NO_CACHE_NAME, extra))
        del model, fns


STAGES: dict[str, Callable[[Plan, Recorder, str], None]] = {
    "env": stage_env,
    "train124": stage_train124,
    "hellaswag": stage_hellaswag,
    "generate": stage_generate,
    "train350": _one_training_point("350M"),
    "train774": _one_training_point("774M"),
}


def run_stage(name: str, plan: Plan, rec: Recorder, limit_s: float | None = None) -> bool:
    """Run one stage into ``rec``; a failure is recorded as status ``error`` (True when it succeeded)."""
    rec.start(name, limit_s)
    if not rec.data.get("machine"):
        rec.data["machine"] = machine_facts(plan)
    if plan.cuda:
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32, as gpt2 train
    t0 = time.perf_counter()
    try:
        STAGES[name](plan, rec, name)
    except Exception as exc:  # noqa: BLE001 - the error is the stage's result; the next stage still runs
        traceback.print_exc()
        rec.finish(name, "error", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"[:500])
        return False
    rec.finish(name, "ok", time.perf_counter() - t0)
    return True


def make_plan(device: str, dry_run: bool, repeat: int | None = None) -> Plan:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GPT2Error(f"--device {device}: no CUDA GPU is available on this machine (the dry run uses --device cpu)")
    if dev.type != "cuda" and not dry_run:
        raise GPT2Error("the GPU check measures a CUDA GPU: use --device cuda (or --dry-run on the CPU)")
    return Plan(dev, dry_run, repeat or (1 if dry_run else 10))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_check", description="one stage of the GPU check")
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--out", required=True, help="folder of gpu-check.json / gpu-check.md (updated in place)")
    parser.add_argument("--device", default=None, help="cuda (default) or cpu with --dry-run")
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU, seconds per stage")
    parser.add_argument("--limit", type=float, help="the stage's time limit in seconds (recorded, not enforced)")
    args = parser.parse_args(argv)
    try:
        plan = make_plan(args.device or ("cpu" if args.dry_run else "cuda"), args.dry_run)
    except GPT2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if run_stage(args.stage, plan, Recorder(args.out, dry_run=args.dry_run), args.limit) else 1


if __name__ == "__main__":
    sys.exit(main())
