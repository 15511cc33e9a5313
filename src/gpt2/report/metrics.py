"""A training run's ``run.json`` and ``metrics.jsonl`` (read by :mod:`gpt2.store.rundir`) as series for reports and
plots.

A run may still be training (the last line half-written) or may have been resumed (the trainer re-logs the
steps after the last checkpoint), so reading is tolerant of exactly those two things and strict about anything
else: a corrupt line in the middle of the file is an error naming file and line, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error
from gpt2.store.rundir import RunDir, read_metrics, read_run_info


@dataclass
class RunMetrics:
    """Everything a run directory logged, rows in step order with resumed duplicates removed."""

    run_dir: Path
    name: str
    run_info: dict[str, Any]
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def series(self, rows: str, key: str, x: str = "tokens") -> tuple[list[float], list[float]]:
        """(xs, ys) of the ``rows`` ("train" or "evals") that have a numeric ``key``; x is ``tokens`` or ``step``."""
        xs: list[float] = []
        ys: list[float] = []
        for row in getattr(self, rows):
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(row.get(x), (int, float)):
                xs.append(row[x])
                ys.append(value)
        return xs, ys

    def last_value(self, rows: str, key: str) -> Any:
        """The newest non-null ``key`` among ``rows`` ("train" or "evals"), or None."""
        for row in reversed(getattr(self, rows)):
            if row.get(key) is not None:
                return row[key]
        return None

    def eval_keys(self) -> list[str]:
        """The metrics of the eval rows (``val_loss``, a benchmark's accuracy, ...) in the order they first appear."""
        skip = ("type", "step", "tokens", "time")
        keys = {key: None for row in self.evals for key, value in row.items() if value is not None}
        return [key for key in keys if key not in skip]

    def last_eval_row(self, key: str) -> dict[str, Any] | None:
        """The newest eval row that reports ``key`` (a slot's metrics come in one row)."""
        for row in reversed(self.evals):
            if row.get(key) is not None:
                return row
        return None

    def wall_time_s(self) -> float | None:
        """Seconds of training: the ``time`` of the last train row, summed over resumed segments.

        A resumed run restarts its clock (``time`` drops), so each segment contributes its own maximum.
        """
        total, segment_max, previous = 0.0, None, None
        for row in self.train:
            t = row.get("time")
            if not isinstance(t, (int, float)):
                continue
            if previous is not None and t < previous:
                total += segment_max or 0.0
                segment_max = None
            segment_max = t if segment_max is None else max(segment_max, t)
            previous = t
        if segment_max is None:
            return None
        return total + segment_max


def _drop_superseded(rows: list[dict[str, Any]], same_step_repeats: bool) -> list[dict[str, Any]]:
    """Keep only the newest rows when a resumed run re-logs steps: a step going backwards discards the older tail.

    Eval and sample rows may legitimately repeat a step (several eval rows of one step, one sample
    per prompt), so for them only a strictly smaller step marks a resume.
    """
    kept: list[dict[str, Any]] = []
    for row in rows:  # every row has a whole "step" (read_metrics checks it)
        while kept and (kept[-1]["step"] > row["step"] or (kept[-1]["step"] == row["step"] and not same_step_repeats)):
            kept.pop()
        kept.append(row)
    return kept


GENERIC_DIR_NAMES = ("run", "out", "output", "latest")  # say nothing alone: label such runs "parent/name"


def run_label(run_dir: str | Path, components: int = 1) -> str:
    """A short legend label for a run: its directory name, with the parent's when the name alone says nothing."""
    parts = Path(run_dir).resolve().parts
    if parts and parts[-1] in GENERIC_DIR_NAMES:
        components = max(components, 2)
    return "/".join(parts[-components:])


def read_run(run_dir: str | Path, name: str | None = None) -> RunMetrics:
    """Read ``RUN_DIR/metrics.jsonl`` (required) and ``RUN_DIR/run.json`` (optional) of one training run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GPT2Error(f"run directory not found: {run_dir}")
    path = RunDir(run_dir).metrics
    if not path.is_file():
        raise GPT2Error(f"{run_dir} has no {path.name}: is it a training run directory (gpt2 train --out DIR)?")
    rows = read_metrics(run_dir)
    if not rows:
        raise GPT2Error(f"{path} is empty: the run has not logged a step yet")
    label = name or run_label(run_dir)
    return RunMetrics(
        run_dir=run_dir,
        name=label,
        run_info=read_run_info(run_dir),
        train=_drop_superseded([r for r in rows if r["type"] == "train"], same_step_repeats=False),
        evals=_drop_superseded([r for r in rows if r["type"] == "eval"], same_step_repeats=True),
        samples=_drop_superseded([r for r in rows if r["type"] == "sample"], same_step_repeats=True),
    )


def read_runs(run_dirs: list[str | Path]) -> list[RunMetrics]:
    """Read several runs, labelling each by its directory name (made unique with parent names if they collide)."""
    paths = [Path(d) for d in run_dirs]
    names = [run_label(p) for p in paths]
    if len(set(names)) < len(names):
        names = [run_label(p, components=2) for p in paths]
    return [read_run(p, n) for p, n in zip(paths, names, strict=True)]
