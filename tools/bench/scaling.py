"""``python -m tools.bench scaling``: how our training step and generation grow with sequence length and batch,
and how much of a second process DDP turns into throughput.

Nothing external to compare with here, so each sweep point is reported against the sweep's first
point (ratio = tok/s relative to it; memory: first point / this point), and DDP against the ideal:
efficiency = throughput(2 processes) / (2 x throughput(1 process)), both through ``gpt2 train``
under torchrun with one thread per process and the same per-process micro-batch.

``write_plots`` draws the figures (``python -m tools.bench scaling --plot-dir docs/img``).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2.config import GPT2_VOCAB_SIZE, GPTConfig
from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.runtime.device import autocast
from gpt2.store.rundir import RunDir, read_metrics
from tools.bench.core import BenchResult, median_seconds
from tools.bench.memory import peak_memory_bytes
from tools.bench.train import autocast_dtype, make_train_step

MIB = 2**20
NEW_TOKENS = 32  # tokens generated per generation measurement (quick: 8)


@dataclasses.dataclass(frozen=True)
class ScalingPlan:
    """Model and sweeps of one run. ``seq_lens`` run at ``seq_batch``; ``batches`` at ``batch_seq``."""

    config: GPTConfig
    size: str
    seq_lens: tuple[int, ...]
    seq_batch: int
    batches: tuple[int, ...]
    batch_seq: int
    new_tokens: int
    ddp: dict[str, Any] | None  # gpt2 train options for the DDP runs, None = skipped


def scaling_plan(device: torch.device, quick: bool) -> ScalingPlan:
    if quick:
        tiny = GPTConfig.named("tiny")
        # no DDP: torchrun + two trainer processes cost ~20 s of CPU, too much for a smoke test
        return ScalingPlan(tiny, "tiny", (32, 64), 1, (1, 2), 32, 8, None)
    if device.type == "cuda":
        # 124M at bf16, eager (compiling every shape would dominate the sweep); DDP needs 2 GPUs: skipped
        return ScalingPlan(GPTConfig.named("124M"), "124M", (128, 256, 512, 1024), 16, (1, 4, 16, 32), 1024, 128, None)
    # tiny's shape with GPT-2's 1024-token context: on 2 shared cores a sweep of mini took over 10 minutes
    tiny_1k = dataclasses.replace(GPTConfig.named("tiny"), block_size=1024)
    ddp = {"size": "tiny", "micro_batch": 8, "seq_len": 128, "steps": 6}
    return ScalingPlan(tiny_1k, "tiny (block 1024)", (128, 256, 512, 1024), 1, (1, 2, 4, 8), 128, NEW_TOKENS, ddp)


def make_generation(config: GPTConfig, batch: int, context: int, new_tokens: int, device: torch.device):
    """A closure generating ``new_tokens`` greedy tokens for ``batch`` samples after a random prompt of
    ``context - new_tokens`` tokens, through the library's KV-cache decoder (gpt2.generate)."""
    from gpt2.generate import generate_token_ids
    from gpt2.generate.sampling import SamplingOptions

    torch.manual_seed(0)
    model = GPT(config).to(device).eval()
    prompt = torch.randint(0, GPT2_VOCAB_SIZE - 1, (context - new_tokens,), generator=torch.Generator().manual_seed(0))
    options = SamplingOptions(max_new_tokens=new_tokens, temperature=0.0, num_samples=batch)
    amp = autocast_dtype(device)

    def generate() -> None:
        with autocast(device, amp):
            for _ in generate_token_ids(model, prompt.tolist(), options, device=device, stop_at_eot=False):
                pass
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return generate


def _points(plan: ScalingPlan) -> list[tuple[str, int, int]]:
    """(sweep, batch, seq) of every point: the sequence-length sweep, then the batch sweep."""
    by_seq = [("seq_len", plan.seq_batch, t) for t in plan.seq_lens]
    return by_seq + [("batch", b, plan.batch_seq) for b in plan.batches]


Shape = tuple[str, int, int]  # (kind: train | generate, batch, seq)


def _measure(
    plan: ScalingPlan, shapes: list[Shape], device: torch.device, repeat: int, workdir: Path
) -> dict[Shape, tuple]:
    """(median seconds, peak bytes) of each distinct shape (the two sweeps share their first point).

    Peak memory counts the model's weights too (built inside the measurement). Training is the trainer's
    step (:func:`tools.bench.train.make_train_step`), on random tokens written to ``workdir``."""

    def workload(kind: str, batch: int, seq: int) -> Callable[[], None]:
        if kind == "train":
            return make_train_step("ours", plan.config, batch, seq, device, workdir)
        return make_generation(plan.config, batch, seq, plan.new_tokens, device)

    measured = {}
    for shape in shapes:
        if device.type == "cuda":  # the allocator's peak comes free with the timing
            timed: list[float] = []
            work = lambda shape=shape, out=timed: out.append(median_seconds(workload(*shape), repeat, warmup=1))
            peak = peak_memory_bytes(work, device)
            measured[shape] = (timed[0], peak)
        else:  # counting tensors costs Python work per operator: time first, then count in an untimed run
            seconds = median_seconds(workload(*shape), repeat, warmup=1)
            measured[shape] = (seconds, peak_memory_bytes(lambda shape=shape: _run_for_memory(workload, shape), device))
    return measured


def _run_for_memory(workload: Callable[..., Callable[[], None]], shape: Shape) -> None:
    """Build the workload and run it: twice for training (AdamW allocates its moments in the first step)."""
    work = workload(*shape)
    for _ in range(2 if shape[0] == "train" else 1):
        work()


def _sweep_results(plan: ScalingPlan, measured: dict[Shape, tuple]) -> list[BenchResult]:
    """tok/s and peak memory of every point, each against its sweep's first point."""
    results = []
    for kind in ("train", "generate"):
        points = _points(plan)
        for sweep, batch, seq in points:
            base = next(p for p in points if p[0] == sweep)
            seconds, peak = measured[(kind, batch, seq)]
            base_seconds, base_peak = measured[(kind, base[1], base[2])]
            # tokens per measurement: a training step sees B*T, a generation produces B*new_tokens
            tok_s = batch * (seq if kind == "train" else plan.new_tokens) / seconds
            base_tok_s = base[1] * (base[2] if kind == "train" else plan.new_tokens) / base_seconds
            extra = {
                "suite": "scaling",
                "kind": kind,
                "sweep": sweep,
                "size": plan.size,
                "batch": batch,
                "seq_len": seq,
                "seconds": seconds,
                "peak_memory_mib": peak / MIB,
                "new_tokens": plan.new_tokens if kind == "generate" else None,
            }
            base_label = f"B={base[1]} T={base[2]}"
            label = f"scaling {kind} {'T' if sweep == 'seq_len' else 'B'}-sweep B={batch} T={seq}"
            speed = (tok_s, base_tok_s)
            results.append(BenchResult(f"{label} tok/s", *speed, "tok/s", tok_s / base_tok_s, base_label, extra))
            memory_ratio = base_peak / max(peak, 1)  # lower is better: first point / this point
            memory = (peak / MIB, base_peak / MIB)
            results.append(BenchResult(f"{label} peak memory", *memory, "MiB", memory_ratio, base_label, dict(extra)))
    return results


# ---------------------------------------------------------------------------------------------- DDP


def _random_dataset(directory: Path, tokens: int) -> None:
    """A prepared dataset of uniformly random token ids (speed does not depend on the text)."""
    from gpt2.data.writer import ShardWriter

    writer = ShardWriter(directory, source="bench: random tokens", shard_tokens=tokens, val_tokens=1024)
    ids = np.random.default_rng(0).integers(0, GPT2_VOCAB_SIZE - 1, size=tokens + 1024, dtype=np.uint16)
    writer.add_document(0, ids)
    writer.finish()


def ddp_throughput(options: dict[str, Any], nproc: int, data_dir: Path, run_dir: Path, warmup: int = 1) -> float:
    """Global training tokens/s of ``gpt2 train`` under torchrun with ``nproc`` single-threaded CPU processes:
    the median over the logged steps after ``warmup`` of the tok/s the trainer itself writes to metrics.jsonl."""
    batch_tokens = nproc * options["micro_batch"] * options["seq_len"]
    train_args = [
        "--size", options["size"], "--data", str(data_dir), "--out", str(run_dir), "--device", "cpu",
        "--autocast", "fp32", "--no-compile", "--steps", str(options["steps"]), "--micro-batch",
        str(options["micro_batch"]), "--seq-len", str(options["seq_len"]), "--batch-tokens", str(batch_tokens),
        "--warmup-steps", "1", "--eval-every", "0", "--hellaswag-every", "0", "--sample-every", "0",
        "--save-every", "0", "--log-every", "1000000",
    ]  # fmt: skip
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "gpt2", "train", *train_args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise GPT2Error(f"DDP benchmark: gpt2 train with {nproc} process(es) failed (exit {proc.returncode}): {tail}")
    rates = [row["tok_per_s"] for row in read_metrics(run_dir) if row["type"] == "train"][warmup:]
    if not rates:
        raise GPT2Error(f"DDP benchmark: no timed steps in {RunDir(run_dir).metrics}")
    return statistics.median(rates)


def _ddp(plan: ScalingPlan) -> list[BenchResult]:
    options = plan.ddp
    assert options is not None
    with tempfile.TemporaryDirectory(prefix="gpt2-bench-ddp-") as tmp:
        data_dir = Path(tmp) / "data"
        # enough tokens that 2 ranks x all steps never wrap around (wrapping costs nothing, but keep it plain)
        _random_dataset(data_dir, 2 * options["micro_batch"] * (options["seq_len"] + 1) * (options["steps"] + 1))
        started = time.perf_counter()
        one = ddp_throughput(options, 1, data_dir, Path(tmp) / "run1")
        two = ddp_throughput(options, 2, data_dir, Path(tmp) / "run2")
        elapsed = time.perf_counter() - started
    extra = {
        "suite": "scaling",
        "kind": "ddp",
        "size": options["size"],
        "batch": options["micro_batch"],
        "seq_len": options["seq_len"],
        "steps": options["steps"],
        "backend": "gloo",
        "threads_per_process": 1,
        "one_process_tok_s": one,
        "two_process_tok_s": two,
        "wall_seconds": elapsed,
    }
    label = f"scaling DDP 2 processes (gloo, 1 thread each) {options['size']} B={options['micro_batch']}"
    name = f"{label} T={options['seq_len']} tok/s"
    return [BenchResult(name, two, 2 * one, "tok/s", two / (2 * one), "2 x 1 process", extra)]


def run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]:
    """Training-step and generation sweeps over T and batch, then DDP 1 -> 2 processes (CPU only)."""
    dev = torch.device(device)
    plan = scaling_plan(dev, quick)
    repeat = min(repeat, 2)  # a sweep has many points; the trend matters more than the last percent
    shapes = list(dict.fromkeys((kind, b, t) for kind in ("train", "generate") for _, b, t in _points(plan)))
    with tempfile.TemporaryDirectory(prefix="gpt2-bench-scaling-") as workdir:
        results = _sweep_results(plan, _measure(plan, shapes, dev, repeat, Path(workdir)))
    if plan.ddp is not None:
        results += _ddp(plan)
    return results


# ---------------------------------------------------------------------------------------------- figures


def write_plots(results: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """PNG figures of the sweeps (time and memory vs T and vs batch) and of DDP; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = [r for r in results if r.get("kind") in ("train", "generate") and r["unit"] == "tok/s"]
    if not points:
        return []
    machine = results[0].get("machine", {})
    where = f"{machine.get('gpu') or machine.get('cpu', '?')}, {machine.get('threads', '?')} threads"
    paths = []
    for sweep, axis_label in (("seq_len", "sequence length T (tokens)"), ("batch", "batch size B (sequences)")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for kind, marker in (("train", "o"), ("generate", "s")):
            series = sorted((r for r in points if r["kind"] == kind and r["sweep"] == sweep), key=lambda r: r[sweep])
            if not series:
                continue
            xs = [r[sweep] for r in series]
            what = "training step" if kind == "train" else f"generate {series[0]['new_tokens']} tokens"
            axes[0].plot(xs, [r["seconds"] for r in series], marker=marker, label=what)
            axes[1].plot(xs, [r["peak_memory_mib"] for r in series], marker=marker, label=what)
        fixed = points[0]
        other = f"B={fixed['batch']}" if sweep == "seq_len" else f"T={fixed['seq_len']}"
        for ax, ylabel in zip(axes, ("seconds", "peak memory (MiB)"), strict=True):
            ax.set_xscale("log", base=2)  # sizes double from point to point
            ax.set_xticks(sorted({r[sweep] for r in points}))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_ylim(bottom=0)  # linear from 0, so "twice the size, twice the cost" reads directly
            ax.set_xlabel(axis_label)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        axes[0].set_title(f"time vs {sweep} ({other}, {fixed['size']})")
        axes[1].set_title(f"peak memory vs {sweep}")
        fig.suptitle(where, fontsize=9)
        fig.tight_layout()
        path = out / f"scaling_{sweep}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    ddp = [r for r in results if r.get("kind") == "ddp"]
    if ddp:
        r = ddp[0]
        fig, ax = plt.subplots(figsize=(5, 4))
        bars = ["1 process", "2 processes", "2 x 1 process (ideal)"]
        values = [r["one_process_tok_s"], r["two_process_tok_s"], 2 * r["one_process_tok_s"]]
        ax.bar(bars, values, color=["#888", "#1f77b4", "#ccc"])
        ax.set_ylabel("training tokens/s (all processes)")
        ax.set_title(f"DDP on CPU (gloo): efficiency {r['ratio']:.0%}\n{r['size']} B={r['batch']} T={r['seq_len']}")
        fig.tight_layout()
        path = out / "scaling_ddp.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
