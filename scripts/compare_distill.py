"""Distillation vs training from scratch on a CPU: the measurement behind docs/training.md ("Distillation").

A teacher (the tiny shape: 2 blocks x 64 channels) trains on the Wikipedia stand-in; then four students of half its
depth (1 block x 64 channels) train on the same STEPS x 512 tokens (same seed, so the same batches, same lr and
schedule) and are compared by validation loss on the same held-out tokens:

    scratch         random init, next-token loss only (the baseline)
    distil          random init, --distill-from the teacher (T = 2, alpha = 0.5: the defaults)
    distil-T1       the same at temperature 1 (the teacher's own distribution, not a softened one)
    init            --init-from the teacher --init-layers 0 (its first block, embeddings, final norm), no teacher
    init+distil     both: DistilGPT2's recipe

    python scripts/compare_distill.py [OUT_DIR]    # default runs/distill; prints the Markdown table

Environment: WIKI (the JSONL to prepare, default ../shared/data/wiki/enwiki_sample.jsonl), DATA (prepared dataset,
default data/wiki-distill), TEACHER_STEPS (default 150), STEPS (students, default 40). One run at a time with one
thread (OMP_NUM_THREADS=1). Finished runs are skipped, so a rerun only prints the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gpt2.store.rundir import read_metrics

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/distill")
WIKI = os.environ.get("WIKI", "../shared/data/wiki/enwiki_sample.jsonl")
DATA = os.environ.get("DATA", "data/wiki-distill")
TEACHER_STEPS = int(os.environ.get("TEACHER_STEPS", "150"))
STEPS = int(os.environ.get("STEPS", "40"))
GPT2 = [sys.executable, "-m", "gpt2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# every run: 512-token steps of 8 x 64, lr 3e-3 with 5 warmup steps then cosine to 10%, val loss on 16,384 tokens
COMMON = ["--data", DATA, "--seq-len", "64", "--micro-batch", "8", "--batch-tokens", "512", "--lr", "3e-3"]
COMMON += ["--warmup-steps", "5", "--min-lr-ratio", "0.1", "--eval-tokens", "16384", "--hellaswag-every", "0"]
COMMON += ["--sample-every", "0", "--save-every", "0", "--keep-last", "1", "--device", "cpu", "--seed", "1337"]
STUDENT_SHAPE = {"model": {"n_layer": 1, "n_head": 2, "n_embd": 64, "block_size": 64}}  # half the teacher's depth


def run(name: str, steps: int, *options: str) -> list[dict]:
    out = OUT / name
    if not (out / f"step_{steps:06d}").is_dir():
        command = [*GPT2, "train", *COMMON, "--steps", str(steps), "--eval-every", str(steps // 2), "--out", str(out)]
        print(f"training {name} ...", flush=True)
        with (OUT / f"{name}.log").open("w") as log:
            subprocess.run([*command, *options], stdout=log, stderr=subprocess.STDOUT, env=ENV, check=True)
    return read_metrics(out)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if not (Path(DATA) / "manifest.json").is_file():
        prepare = ["prepare", "files", WIKI, "--out", DATA, "--max-tokens", "2000000", "--val-tokens", "100000"]
        subprocess.run([*GPT2, *prepare, "--quiet"], env=ENV, check=True)
    (OUT / "student.json").write_text(json.dumps(STUDENT_SHAPE))
    teacher = str(OUT / "teacher")
    student = ["--config", str(OUT / "student.json")]
    from_teacher = ["--init-from", teacher, "--init-layers", "0"]
    runs = {
        "teacher": run("teacher", TEACHER_STEPS, "--size", "tiny"),
        "scratch": run("scratch", STEPS, *student),
        "distil": run("distil", STEPS, *student, "--distill-from", teacher),
        "distil-T1": run("distil-T1", STEPS, *student, "--distill-from", teacher, "--distill-temperature", "1"),
        "init": run("init", STEPS, *from_teacher),
        "init+distil": run("init+distil", STEPS, *from_teacher, "--distill-from", teacher),
    }
    print(table(runs))


def table(runs: dict[str, list[dict]]) -> str:
    scratch = final(runs["scratch"], "val_loss")
    lines = [
        "| model | blocks x width | parameters | tokens | val loss | vs scratch | tok/s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        info = json.loads((OUT / name / "run.json").read_text())
        shape = f"{info['model']['n_layer']} x {info['model']['n_embd']}"
        val = final(rows, "val_loss")
        speeds = sorted(r["tok_per_s"] for r in rows if r["type"] == "train")
        lines.append(
            f"| {name} | {shape} | {info['parameters']:,} | {final(rows, 'tokens'):,} | {val:.4f} | "
            f"{val - scratch:+.4f} | {speeds[len(speeds) // 2]:,.0f} |"
        )
    return "\n".join(lines)


def final(rows: list[dict], key: str) -> float:
    return [r for r in rows if r["type"] == "eval"][-1][key]


if __name__ == "__main__":
    main()
