"""Peak memory of a piece of work, measured the only way that sees PyTorch's CPU allocations.

``tracemalloc`` only tracks Python objects, and PyTorch keeps no allocator statistics on CPU, so
on CPU we run the work in a fresh Python process and read the operating system's peak resident
set size (RSS): the peak after the work minus the RSS before it, after the imports. A fresh process per
measurement matters: memory freed by earlier work stays in the allocator's pools and would hide
part of the next peak. On CUDA the caching allocator does keep statistics, so we measure in-process.

A job is named ``"module:function"``; the function takes JSON-serialisable keyword arguments, does
its imports, and returns a zero-argument callable that does (and therefore allocates) the work.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in bytes (Linux), or None elsewhere."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, kB on Linux


def resolve_job(job: str) -> Callable[..., Callable[[], Any]]:
    module_name, _, function_name = job.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def measure_here(job: str, kwargs_list: list[dict[str, Any]]) -> list[int]:
    """Run ``job(**kwargs)`` for each kwargs in turn in this process; bytes of RSS each one added at its peak.

    Meaningful only in a fresh process; for more than one job, freed tensors must go back to the
    operating system (see :func:`cpu_peak_memory_series`), else a later job reuses earlier pages unseen.
    """
    peaks = []
    for kwargs in kwargs_list:
        work = resolve_job(job)(**kwargs)
        _reset_peak_rss()
        before = _status_bytes("VmRSS")
        if before is None:  # no /proc: fall back to the lifetime peak, which the imports may dominate
            before = _peak_rss_bytes()
        work()
        peaks.append(max(0, _peak_rss_bytes() - before))
        del work
    return peaks


def _run_worker(job: str, kwargs_list: list[dict[str, Any]], num_threads: int, env: dict, timeout_s: float):
    payload = json.dumps({"job": job, "kwargs_list": kwargs_list, "threads": num_threads})
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2.bench.memory", payload],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(num_threads), **env},
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GPT2Error(f"memory measurement of {job} failed (exit {proc.returncode}): {last}")
    return [int(b) for b in json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]]


def cpu_peak_memory_bytes(job: str, kwargs: dict[str, Any], num_threads: int, timeout_s: float = 600) -> int:
    """Peak extra RSS in bytes of ``job(**kwargs)()`` run alone in a fresh process with ``num_threads`` threads."""
    return _run_worker(job, [kwargs], num_threads, {}, timeout_s)[0]


def cpu_peak_memory_series(
    job: str, kwargs_list: list[dict[str, Any]], num_threads: int, timeout_s: float = 600
) -> list[int]:
    """Peak extra RSS in bytes of each ``job(**kwargs)()``, run one after another in one fresh process.

    Cheaper than a process per point (one import of torch) for a sweep. glibc is told to serve every
    allocation above 64 KiB with its own mmap and to unmap it on free (a fixed threshold also turns off
    its adaptive one), so a finished point's tensors leave the process and the next point's peak is its own.
    """
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    return _run_worker(job, kwargs_list, num_threads, env, timeout_s)


def cuda_peak_memory_bytes(work: Callable[[], Any], device: str) -> int:
    """Peak bytes allocated by the CUDA caching allocator while ``work()`` runs (its tensors included)."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    work()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _warm_up_torch() -> None:
    """Run one tiny training step so torch's lazily imported modules (optimizer, autograd, kernels)
    and thread pool exist before the baseline: their ~100 MB of one-off setup is no job's memory."""
    import torch

    layer = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(layer.parameters())
    logits = layer(torch.ones(8, 64))
    torch.nn.functional.cross_entropy(logits, torch.zeros(8, dtype=torch.long)).backward()
    optimizer.step()


def _main(argv: list[str]) -> int:
    import torch

    request = json.loads(argv[0])
    torch.set_num_threads(int(request["threads"]))
    _warm_up_torch()
    print(json.dumps({"peak_bytes": measure_here(request["job"], request["kwargs_list"])}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
