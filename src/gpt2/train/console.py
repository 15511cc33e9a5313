"""What a run tells the user and its metrics.jsonl: one row per step / evaluation / sample, and its console line.

The rows are written through :class:`gpt2.store.rundir.MetricsLog` (rank 0 only) and, by the same call, to the
experiment trackers of ``--log-to`` (:class:`gpt2.train.tracking.Tracking`); the console lines go through
tqdm so they do not tear the progress bar. docs/training.md lists the row fields.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol


class RowSink(Protocol):
    """Where metrics rows go: :class:`gpt2.store.rundir.MetricsLog`, :class:`gpt2.train.tracking.Tracking`."""

    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


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
    """The console line of one eval row: validation loss and/or HellaSwag accuracy."""
    parts = [f"eval step {row['step']}"]
    if "val_loss" in row:
        tokens = f" ({row['val_tokens']:,} tokens)" if "val_tokens" in row else ""  # eval rows before issue 23: none
        parts.append(f"val loss {row['val_loss']:.4f}{tokens}")
    if "hellaswag_acc_norm" in row:
        parts.append(f"hellaswag acc_norm {row['hellaswag_acc_norm']:.4f} (n={row['hellaswag_n']})")
    return " | ".join(parts)


class RunConsole:
    """Rank 0's voice: console messages, warnings, and the metrics.jsonl rows with their console lines.

    On other ranks every method is a no-op, so the loop calls them unconditionally.
    """

    def __init__(self, is_main: bool, total_steps: int, log_every: int):
        self.is_main = is_main
        self.total_steps = total_steps
        self.log_every = max(1, log_every)
        self.sinks: list[RowSink] = []

    def open(self, *sinks: RowSink) -> None:
        """Send every row from now on to each of ``sinks`` (metrics.jsonl first, then the trackers)."""
        self.sinks = list(sinks)

    def close(self) -> None:
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()

    def log(self, message: str) -> None:
        if self.is_main:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)

    def warn(self, message: str) -> None:
        if self.is_main:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def _write(self, row: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(row)

    def train_row(self, row: dict[str, Any]) -> None:
        """Log a train row; its console line every ``log_every`` steps, at the last step and for skipped ones."""
        self._write(row)
        step = row["step"]
        if step % self.log_every == 0 or step == self.total_steps or row.get("skipped"):
            self.log(format_step_line(row, self.total_steps))

    def evaluation(self, base: dict[str, Any], metrics: dict[str, Any], samples: list[dict[str, Any]]) -> None:
        """Log the eval row (if any metrics) and one sample row per generated sample; ``base`` = step, tokens."""
        if metrics:
            row = {"type": "eval", **base, **metrics}
            self._write(row)
            self.log(format_eval_line(row))
        for sample in samples:
            self._write({"type": "sample", **base, **sample})
            self.log(f"sample: {sample['prompt']}{sample['text']!r}")
