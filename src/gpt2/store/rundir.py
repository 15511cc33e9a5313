"""A training run directory: :class:`RunDir` is the only code that knows the names inside it.

    RUN_DIR/
      run.json          how the run was started (config, device, versions) and when it was resumed
      metrics.jsonl     one JSON object per line: train / eval / sample rows (docs/training.md lists the fields)
      step_000123/      a complete checkpoint (written by gpt2.store.checkpointer)
      latest            "step_000123": the newest complete checkpoint, repointed only once it is complete
      train.lock        locked (flock) by the ``gpt2 train`` writing the run, for its lifetime; says its pid and host
      .step_000124.tmp-XXXX/   a checkpoint being written (or left half-written by a crash; removed on resume)
      lm_eval.json      ``gpt2 eval lm-eval`` results (also kept next to a checkpoint evaluated on its own)
      report.md, plot.png      ``gpt2 report``
      tensorboard/      ``--log-to tensorboard`` event files (W&B makes its own ``wandb/``)

``metrics.jsonl`` is appended and flushed after every row, so a crash loses at most the row being
written; on resume the rows after the checkpoint's step (logged by the run that died) are dropped,
so the file reads as one uninterrupted history.

Light on purpose (no torch, no gpt2.train): the report, the app and ``gpt2 info`` read runs with it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error
from gpt2.store.files import (
    atomic_write_text,
    check_writable,
    parse_json_line,
    read_json_object,
    write_error,
    write_json_atomic,
)

ROW_TYPES = ("train", "eval", "sample")
LATEST_MAX_BYTES = 64  # "step_000123\n" is 12 bytes: a longer ``latest`` is not ours, and is never read whole
STEP_DIR = re.compile(r"^step_([0-9]+)\Z")
STALE_OLD = re.compile(r"^\.(step_\d+)\.old-\d+$")
LOCK_HOLDER = re.compile(rb"pid ([0-9]{1,10}) on ([A-Za-z0-9_.-]{1,64})\n")


class RunDir:
    """The paths inside a run directory ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.run_info = self.root / "run.json"
        self.metrics = self.root / "metrics.jsonl"
        self.latest = self.root / "latest"  # the name of the newest complete checkpoint directory
        self.lock = self.root / "train.lock"
        self.lm_eval = self.root / "lm_eval.json"
        self.core = self.root / "core.json"
        self.report = self.root / "report.md"
        self.plot = self.root / "plot.png"
        self.tensorboard = self.root / "tensorboard"

    def checkpoint(self, step: int) -> Path:
        """The checkpoint after ``step`` optimizer steps: ``step_000123``."""
        return self.root / f"step_{step:06d}"

    def stale_temporaries(self) -> list[str]:
        """What a crash can leave here, by the names our writers give (never anything else): a step_N being
        written (files.atomic_directory), the old step_N it was replacing, temp files of latest / metrics /
        run.json (files.atomic_output) and the write probe of :func:`check_run_dir`."""
        files = (self.latest, self.metrics, self.run_info)
        return [".step_*.tmp-*", ".step_*.old-*", *(f".{f.name}.*.tmp" for f in files), ".write-test-*"]


# ---------------------------------------------------------------- the lock of a training run


class RunLock:
    """One ``gpt2 train`` per run directory: an exclusive ``flock`` on RUN_DIR/train.lock until :meth:`close`.

    The kernel drops the lock when the process ends, however it ends, so the lock of a dead process is no lock
    and is taken over. Taking it writes nothing (a refused invocation leaves the run as it was); :meth:`claim`,
    once the run starts, writes the holder's note ``pid N on HOST`` that a refused run shows (only what matches
    that pattern). The file is never followed as a link.
    """

    def __init__(self, run_dir: Path):
        path = RunDir(run_dir).lock
        try:
            self.file = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666), "r+b")
        except OSError as exc:
            reason = write_error(exc, path)
            raise GPT2Error(f"--out {run_dir}: cannot open its lock file {path.name} ({reason})") from None
        try:
            if not stat.S_ISREG(os.fstat(self.file.fileno()).st_mode):
                raise GPT2Error(f"--out {run_dir}: its lock file {path.name} is not a regular file; remove it")
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = LOCK_HOLDER.match(self.file.read(100))
            self.file.close()
            by = f"pid {holder[1].decode()} on {holder[2].decode()}" if holder else "another process"
            message = f"--out {run_dir} is in use by gpt2 train ({by}); wait for it or choose another --out"
            raise GPT2Error(message) from None
        except BaseException:
            self.file.close()
            raise

    def claim(self) -> None:
        """Write this process's note into the lock file (the run has started)."""
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# ---------------------------------------------------------------- checkpoints and the latest pointer


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``, links followed, stays inside ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint that ``run_dir/latest`` points to, or None when there is none.

    ``latest`` is untrusted (a run directory may come from anyone, and the server shows errors to clients):
    at most a few bytes are read, only a ``step_N`` name is accepted, the file's content is never echoed,
    and neither it nor the checkpoint it names may be a link out of the run directory.
    """
    names = RunDir(run_dir)
    pointer = names.latest
    if not pointer.is_file():
        return None
    if not _inside(names.root, pointer):
        raise GPT2Error(f"{pointer} is a link out of the run directory; not following it")
    with open(pointer, "rb") as f:
        raw = f.read(LATEST_MAX_BYTES + 1)
    name = raw.decode("ascii", errors="replace").strip()
    if len(raw) > LATEST_MAX_BYTES or not STEP_DIR.match(name):
        raise GPT2Error(f"{pointer} is corrupt: it must hold the name of a checkpoint directory (step_N)")
    target = names.root / name
    if not target.is_dir():
        raise GPT2Error(f"{pointer} points to {name!r}, which does not exist")
    if not _inside(names.root, target):
        raise GPT2Error(f"{pointer} points to {name}, a link out of the run directory; not following it")
    return target


def write_latest(run_dir: str | Path, name: str) -> None:
    """Point ``run_dir/latest`` at ``name`` by temp file + rename: readers see the old or the new name, never half."""
    atomic_write_text(RunDir(run_dir).latest, name + "\n")


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoint directories of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (never the one ``latest`` names); returns the deleted.

    ``keep_last`` 0 keeps everything.
    """
    if keep_last <= 0:
        return []
    latest = latest_checkpoint(run_dir)
    checkpoints = [path for _, path in list_checkpoints(run_dir)]
    doomed = [path for path in checkpoints[:-keep_last] if latest is None or path.name != latest.name]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove what a crash left behind (:meth:`RunDir.stale_temporaries`; only while no other process writes the run).

    A ``.step_N.old-PID`` whose ``step_N`` is missing (killed between the two renames of a replace) is the
    only copy of that checkpoint: it is renamed back, not removed. Returns the removed paths.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    stale = sorted({path for pattern in RunDir(run_dir).stale_temporaries() for path in run_dir.glob(pattern)})
    removed = []
    for path in stale:
        old = STALE_OLD.match(path.name)
        if old and path.is_dir() and not (run_dir / old.group(1)).exists():
            os.replace(path, run_dir / old.group(1))
            continue
        is_dir = path.is_dir() and not path.is_symlink()
        if path.name.startswith(".step_") != is_dir:
            continue  # ours are directories for step_N and files otherwise: anything else is not ours
        if is_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def find_resume_checkpoint(run_dir: Path, resume: bool | None) -> Path | None:
    """The checkpoint a run continues from: ``latest`` for resume None (auto) or True; None for a fresh run.

    Refuses ``--resume`` without a checkpoint, ``--no-resume`` over existing ones (they would be
    overwritten), and checkpoint directories without a pointer (a damaged run to look at by hand).
    """
    latest = latest_checkpoint(run_dir)
    if latest is None and list_checkpoints(run_dir):
        raise GPT2Error(f"{run_dir} has checkpoint directories but no 'latest' pointer; fix or move it")
    if resume is True and latest is None:
        raise GPT2Error(f"--resume: {run_dir} has no checkpoint to resume from")
    if resume is False and latest is not None:
        raise GPT2Error(
            f"--no-resume: {run_dir} already holds checkpoints (latest {latest.name}); "
            "choose a new --out so they are not overwritten"
        )
    return latest


def check_run_dir(run_dir: Path, checkpoint_bytes: int, keep_last: int) -> None:
    """Fail before training when RUN_DIR cannot be created or written, or its disk is nearly full.

    Needs room for ``keep_last + 1`` checkpoints of ``checkpoint_bytes`` each (a new one is complete
    before the oldest goes).
    """
    check_writable(run_dir, "--out", "run directory")
    free = shutil.disk_usage(run_dir).free
    needed = checkpoint_bytes * ((keep_last or 1) + 1)
    if free < needed:
        raise GPT2Error(
            f"--out {run_dir}: only {free / 1e9:.2f} GB free, but {keep_last or 1} kept checkpoint(s) plus the one "
            f"being written need ~{needed / 1e9:.2f} GB ({checkpoint_bytes / 1e9:.2f} GB each); free some space, "
            "lower --keep-last or choose another --out"
        )


# ---------------------------------------------------------------- metrics.jsonl


class MetricsLog:
    """Appends rows to RUN_DIR/metrics.jsonl, flushed after each (rank 0 only)."""

    def __init__(self, run_dir: Path):
        self.path = RunDir(run_dir).metrics
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``RUN_DIR/metrics.jsonl`` in file order ([] when there is no such file).

    Tolerant of exactly one thing: a torn last line (no newline yet: the trainer was killed mid-write, or
    is writing it now) is skipped. Anything else that is not a JSON object with a known ``type`` is an error
    naming the file and line, never silently dropped.
    """
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = parse_json_line(line, f"{path}:{number}")
        except GPT2Error:
            if number == len(lines) and not text.endswith("\n"):
                break
            raise
        if not isinstance(row, dict) or row.get("type") not in ROW_TYPES:
            raise GPT2Error(f'{path}:{number}: expected a JSON object with "type" one of {", ".join(ROW_TYPES)}')
        rows.append(_check_row(row, f"{path}:{number}"))
    return rows


def _check_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """The field types that the report, the app and the trackers rely on: a whole ``step``, a sample row's prompt
    and text strings, every other field a number (within int64 for integers), true/false or null."""
    if "step" not in row:
        raise GPT2Error(f'{where}: a {row["type"]} row needs a "step"')
    for key, value in row.items():
        number = isinstance(value, float) or (isinstance(value, int) and -(2**63) <= value < 2**63)
        if key == "step":
            ok, expected = number and type(value) is int and value >= 0, "a whole number"
        elif row["type"] == "sample" and key in ("prompt", "text"):
            ok, expected = isinstance(value, str), "a string"
        else:
            ok, expected = key == "type" or value is None or number, "a number or null"
        if not ok:
            got = type(value).__name__ if not isinstance(value, int) else str(value) if number else "a huge integer"
            raise GPT2Error(f'{where}: "{key[:40]}" must be {expected}, got {got}')
    return row


def truncate_metrics(run_dir: str | Path, last_step: int) -> int:
    """Drop rows after ``last_step`` (logged by a run that died before its next checkpoint) and a torn last line.

    Returns how many rows were dropped.
    """
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return 0
    rows = read_metrics(run_dir)
    kept = [row for row in rows if row["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
    return len(rows) - len(kept)


# ---------------------------------------------------------------- run.json


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``RUN_DIR/run.json`` ({} when the run has none); a corrupt one is an error naming the file."""
    path = RunDir(run_dir).run_info
    if not path.is_file():
        return {}
    return read_json_object(path, "run info")


def write_run_info(run_dir: str | Path, info: dict[str, Any], resumed_at: int | None = None) -> dict[str, Any]:
    """Write ``RUN_DIR/run.json`` from ``info`` (how this process trains); returns what was written.

    A fresh run (``resumed_at`` None) starts the history: ``start_time`` now, no ``resumes``. A resumed
    one keeps the first session's ``start_time`` and appends ``{"step", "time", "world_size"}`` to
    ``resumes``; an unreadable old run.json is replaced rather than blocking the resume.
    """
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info = {**info, "start_time": now, "resumes": []}
    if resumed_at is not None:
        try:
            old = read_run_info(run_dir)
        except GPT2Error:
            old = {}
        if old:
            info["start_time"] = old.get("start_time", now)
            resume = {"step": resumed_at, "time": now, "world_size": info.get("world_size")}
            info["resumes"] = [*old.get("resumes", []), resume]
    write_json_atomic(RunDir(run_dir).run_info, info)
    return info
