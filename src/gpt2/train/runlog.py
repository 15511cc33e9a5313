"""What a run writes besides checkpoints: metrics.jsonl, run.json, console lines, and the pre-flight checks.

``metrics.jsonl`` holds one JSON object per line (see docs/training.md for the fields). It is
appended and flushed after every row, so a crash loses at most the row being written; on resume
the rows after the checkpoint's step (written by the run that died) are dropped, so the file
always reads as one uninterrupted history.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error
from gpt2.fileio import atomic_write_text

METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"


def check_run_dir(run_dir: Path, checkpoint_bytes: int, keep_last: int) -> None:
    """Fail before training when RUN_DIR cannot be created or written, or its disk is nearly full.

    Needs room for ``keep_last + 1`` checkpoints (a new one is complete before the oldest goes).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise GPT2Error(f"--out {run_dir}: cannot create or write the run directory ({exc.strerror or exc})") from None
    free = shutil.disk_usage(run_dir).free
    needed = checkpoint_bytes * ((keep_last or 1) + 1)
    if free < needed:
        raise GPT2Error(
            f"--out {run_dir}: only {free / 1e9:.2f} GB free, but {keep_last or 1} kept checkpoint(s) plus the one "
            f"being written need ~{needed / 1e9:.2f} GB ({checkpoint_bytes / 1e9:.2f} GB each); free some space, "
            "lower --keep-last or choose another --out"
        )


class MetricsLog:
    """Appends rows to RUN_DIR/metrics.jsonl (rank 0 only)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / METRICS_FILE
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn last line (the process was killed mid-write) is skipped."""
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows


def truncate_metrics(run_dir: Path, last_step: int) -> int:
    """Drop rows after ``last_step`` (logged by a run that died before its next checkpoint); returns how many."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return 0
    rows = read_metrics(path)
    kept = [row for row in rows if isinstance(row.get("step"), int) and row["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
    return len(rows) - len(kept)


def format_step_line(row: dict[str, Any], total_steps: int) -> str:
    """The console line of one train row: step, loss, lr, grad norm, time, throughput, MFU."""
    width = len(str(total_steps))
    loss = "  skipped " if row["loss"] is None else f"{row['loss']:.6f}"
    norm = "-" if row["grad_norm"] is None else f"{row['grad_norm']:.4f}"
    line = (
        f"step {row['step']:>{width}}/{total_steps} | loss {loss} | lr {row['lr']:.4e} | norm {norm} | "
        f"dt {row['dt_ms']:.1f} ms | {row['tok_per_s']:,.0f} tok/s"
    )
    if row.get("mfu") is not None:
        line += f" | mfu {100 * row['mfu']:.1f}%"
    return line


def format_eval_line(row: dict[str, Any]) -> str:
    parts = [f"eval step {row['step']}"]
    if "val_loss" in row:
        parts.append(f"val loss {row['val_loss']:.4f}")
    if "hellaswag_acc_norm" in row:
        parts.append(f"hellaswag acc_norm {row['hellaswag_acc_norm']:.4f} (n={row['hellaswag_n']})")
    return " | ".join(parts)
