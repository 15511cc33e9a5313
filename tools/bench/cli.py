"""``python -m tools.bench SUITE``: run benchmark suites and print ours / reference / ratio, with the machine.

Each suite is the module ``tools.bench.<suite>`` with ``run(device, repeat, quick) -> list[BenchResult]``,
imported by name only when asked for. A suite that is missing or raises becomes an error entry:
the other suites still run and report, and the command exits 1. Bad arguments are one ``error:`` line, exit 1.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error

# "all" runs them in this order; scaling last (it is the slowest and only compares us with ourselves).
SUITES: tuple[str, ...] = ("train", "generate", "eval", "tokenize", "data", "serve", "scaling")
VERSIONED_PACKAGES = ("torch", "transformers", "numpy", "tiktoken")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", help=f"which benchmark to run: {', '.join(SUITES)} or all")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON array of results instead of a table")
    output.add_argument("--markdown", action="store_true", help="print the table as Markdown (for docs/benchmarks.md)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats per measurement; the median is reported")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="tiny sizes that finish in seconds (a smoke test)")
    parser.add_argument("--threads", type=int, help="torch CPU threads, the same for ours and the reference")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON array to FILE")
    parser.add_argument(
        "--plot-dir", metavar="DIR", help="suites that draw figures (scaling) write their PNGs into DIR"
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failing suite")
    return parser


# The CPU features that decide which kernels torch can use (bf16 matmuls are fast only with AVX512_BF16 or AMX).
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux), else {}."""
    try:
        text = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def cpu_model() -> str:
    """The CPU's marketing name, family/model and vector features, from /proc/cpuinfo (Linux), else what the
    platform module knows. A VM may say only "AMD EPYC": the family and the flags are what can be checked."""
    info = _cpuinfo()
    if not info.get("model name"):
        return platform.processor() or platform.machine() or "unknown"
    flags = set(info.get("flags", "").split())
    features = "/".join(f for f in CPU_FEATURES if f in flags) or "no AVX2"
    return f"{info['model name']} (family {info.get('cpu family', '?')} model {info.get('model', '?')}, {features})"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    """Where the numbers come from: CPU, GPU, threads and library versions."""
    import torch

    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "device": device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in VERSIONED_PACKAGES},
    }


def validate_args(args: argparse.Namespace) -> list[str]:
    """The suites to run; GPT2Error for an unknown suite, a repeat below 1 or an unusable device."""
    if args.suite != "all" and args.suite not in SUITES:
        known = ", ".join(SUITES)
        raise GPT2Error(f"unknown benchmark suite {args.suite!r}; choose one of: {known}, all")
    if args.repeat < 1:
        raise GPT2Error(f"--repeat must be at least 1, got {args.repeat}")
    if args.threads is not None and args.threads < 1:
        raise GPT2Error(f"--threads must be at least 1, got {args.threads}")
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise GPT2Error(f"--device {args.device!r} is not a device name (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GPT2Error(f"--device {args.device}: no CUDA GPU is available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise GPT2Error(f"--device {args.device}: benchmarks support cpu and cuda")
    return list(SUITES) if args.suite == "all" else [args.suite]


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN/inf: a non-finite figure is reported as null rather than as invalid JSON.
    return value if not isinstance(value, float) or math.isfinite(value) else None


def run_suite(suite: str, device: str, repeat: int, quick: bool) -> list[dict[str, Any]]:
    """Results of one suite as dicts; a missing suite gives one entry with an ``error`` key, a failing one raises."""
    module_name = f"tools.bench.{suite}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the suite exists but one of its imports is missing: a real failure, reported by the caller
        return [error_entry(suite, f"suite module {module_name} is not available in this installation")]
    results = [result.to_dict() for result in module.run(device=device, repeat=repeat, quick=quick)]
    for entry in results:
        entry.setdefault("suite", suite)
    return results


def write_suite_plots(suite: str, entries: list[dict[str, Any]], plot_dir: str) -> None:
    """Let a suite that defines ``write_plots(entries, dir)`` draw its figures."""
    module = importlib.import_module(f"tools.bench.{suite}")
    if hasattr(module, "write_plots"):
        for path in module.write_plots(entries, plot_dir):
            print(f"wrote {path}", file=sys.stderr)


def error_entry(suite: str, message: str) -> dict[str, Any]:
    return {"name": suite, "suite": suite, "ours": None, "reference": None, "unit": "", "ratio": None, "error": message}


def collect(suites: list[str], device: str, repeat: int, quick: bool, plot_dir: str | None = None, debug: bool = False):
    """Run ``suites`` in turn; every entry gets the machine/versions/date extras. Never raises for a suite."""
    machine = machine_info(device)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    entries: list[dict[str, Any]] = []
    for suite in suites:
        started = time.perf_counter()
        try:
            results = run_suite(suite, device, repeat, quick)
            elapsed = time.perf_counter() - started
            for entry in results:
                entry.update({key: _finite_or_none(value) for key, value in entry.items()})
                entry.update(machine=machine, date=date, suite_seconds=elapsed)
            if plot_dir and not any("error" in entry for entry in results):
                write_suite_plots(suite, results, plot_dir)
        except Exception as exc:  # one broken suite must not hide the others' numbers
            if debug:
                traceback.print_exc()
            results = [error_entry(suite, f"{type(exc).__name__}: {exc}")]
            results[0].update(machine=machine, date=date)
        entries.extend(results)
    return entries


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _rows(entries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for e in entries:
        ratio = "ERROR" if "error" in e else (_fmt(e["ratio"]) + "x" if e["ratio"] is not None else "-")
        rows.append((e["name"], _fmt(e["ours"]), _fmt(e["reference"]), e["unit"], ratio, e.get("reference_name", "")))
    return rows


def format_markdown(entries: list[dict[str, Any]]) -> str:
    """A Markdown table of the results (errors included), for pasting into docs."""
    lines = ["| name | ours | reference | unit | ratio | reference is |", "|---|--:|--:|---|--:|---|"]
    for e, row in zip(entries, _rows(entries), strict=True):
        cells = list(row)
        if "error" in e:
            cells[-1] = f"error: {e['error']}"
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def format_table(entries: list[dict[str, Any]]) -> str:
    """A fixed-width table: name, ours, reference, unit, ratio (errors on their own line), then the machine."""
    rows = [("name", "ours", "reference", "unit", "ratio")] + [row[:5] for row in _rows(entries)]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    for e in entries:
        if "error" in e:
            lines.append(f"{e['name']}: error: {e['error']}")
    references = sorted({e["reference_name"] for e in entries if e.get("reference_name")})
    if references:
        lines.append("references: " + "; ".join(references))
    if entries:
        m = entries[0]["machine"]
        versions = ", ".join(f"{name} {version}" for name, version in m["versions"].items() if version)
        gpu = f", GPU {m['gpu']}" if m["gpu"] else ""
        lines.append(f"machine: {m['cpu']} ({m['cpu_count']} CPUs, {m['threads']} torch threads){gpu}; {versions}")
        lines.append(f"date: {entries[0]['date']}; ratio = ours / reference, higher is better for us")
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    suites = validate_args(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    entries = collect(suites, args.device, args.repeat, args.quick, args.plot_dir, args.debug)
    if args.out:
        from gpt2.store.files import write_json_atomic

        write_json_atomic(args.out, entries)
    if args.json:
        print(json.dumps(entries))
    else:
        print(format_markdown(entries) if args.markdown else format_table(entries))
    failed = [e["suite"] for e in entries if "error" in e]
    if failed:
        print(f"error: benchmark suite(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_bench(args)
    except GPT2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
