"""Crash-safe file writes and checked JSON reads: the one place every writer and reader of our files goes through.

Every file we write (shards, manifests, checkpoints, ``latest``, ``run.json``, reports, plots, downloads) is
written under a temporary name in the same directory, fsynced and renamed into place, so a reader — or the
next run after a crash — sees the old file or the new one, never half of one. Results get the permissions
of any other file the user creates (0666 / 0777 minus the umask), not the 0600 / 0700 of ``tempfile``.

Light on purpose: no torch, no numpy, so ``gpt2.data`` and the CLI can use it without paying for them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # reading the umask means setting it; put it back at once
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK
TOO_DEEP = "nested too deeply"


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (a rename) to disk; best effort where the OS does not allow it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (its directory created if needed) for the caller to write.

    On success the file is fsynced and renamed onto ``path``; on an exception it is removed, and a crash
    or Ctrl-C leaves the old file (if any) intact and no truncated file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, chunks: Iterable[bytes | memoryview]) -> None:
    """Write ``chunks`` to ``path`` through :func:`atomic_output` (temp file, fsync, rename)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.writelines(chunks)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for a UTF-8 text."""
    atomic_write_bytes(path, [text.encode("utf-8")])


def write_json_atomic(path: str | Path, data: Any, sort_keys: bool = True) -> None:
    """Write ``data`` as indented JSON to ``path`` (temp file + rename)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` whole.

    On an exception the temporary directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        os.chmod(tmp, DIR_MODE)  # mkdtemp creates 0700
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                os.chmod(child, FILE_MODE)
                _fsync_file(child)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(directory: str | Path, option: str, what: str) -> None:
    """Create ``directory`` (``what``, given by ``option``) if needed and probe it with a temp file; else a GPT2Error.

    Run before long work (training, tokenizing) so a read-only or full disk fails at once, not hours later.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = write_error(exc, directory)
        raise GPT2Error(f"{option} {directory}: cannot create or write the {what} ({reason})") from None


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() or not os.path.ismount(path):
        if path.parent == path:
            break
        path = path.parent
    return path


def write_error(exc: BaseException, path: str | Path) -> str:
    """What went wrong writing under ``path``, in words naming the disk: full, read-only, or the OS's reason.

    Works for an ``OSError`` and for errors that only carry the OS error in their text (safetensors'
    ``SafetensorError``: "... No space left on device (os error 28)").
    """
    code = getattr(exc, "errno", None)
    if code is None:
        found = re.search(r"os error (\d+)|code: (\d+)", str(exc))
        code = int(found.group(1) or found.group(2)) if found else None
    disk = _mount_point(Path(path))
    if code == errno.ENOSPC:
        free = shutil.disk_usage(disk).free
        return f"no space left on the disk mounted at {disk} ({free / 1e6:.1f} MB free)"
    if code == errno.EROFS:
        return f"the file system mounted at {disk} is read-only"
    if code is not None:
        return f"{os.strerror(code).lower()} on the disk mounted at {disk}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def file_from_env(variable: str, hint: str) -> Path | None:
    """The file that environment variable ``variable`` names; None when it is unset or empty. A value that names
    no file is a GPT2Error ending in ``(hint)`` (what to put there instead), not a silent fallback."""
    value = os.environ.get(variable, "")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise GPT2Error(f"${variable} is {value!r}, which is not a file ({hint})")
    return path


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON value in ``path``; a missing or corrupt file is a GPT2Error naming ``what`` and the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GPT2Error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise GPT2Error(f"{what} {path} is a directory, expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GPT2Error(f"corrupt {what} {path}: not valid JSON ({exc})") from None
    except (RecursionError, ValueError) as exc:  # "[[[[..." a hundred thousand deep, an integer of 5,000 digits
        reason = TOO_DEEP if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise GPT2Error(f"corrupt {what} {path}: not valid JSON ({reason})") from None


def parse_json_line(line: str, where: str) -> Any:
    """The JSON value of one line of a JSONL file (``where``: FILE:LINE); malformed is a GPT2Error naming it."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at column {exc.colno}"
    except RecursionError:  # Python's parser recurses once per level: "[[[[..." a hundred thousand deep
        reason = TOO_DEEP
    except ValueError as exc:  # an integer of more than 4,300 digits
        reason = str(exc).split(";")[0]
    raise GPT2Error(f"{where}: malformed JSON ({reason})")


def read_json_object(path: str | Path, what: str = "file") -> dict[str, Any]:
    """:func:`read_json` for a file that must hold a JSON object."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise GPT2Error(f"corrupt {what} {path}: expected a JSON object, got {type(data).__name__}")
    return data
