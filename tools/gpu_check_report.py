"""The GPU check's results file: one JSON and one Markdown summary, rewritten after every change.

``scripts/gpu-check.sh`` runs each stage in its own process under a hard time limit. Every stage
records into ``OUT/gpu-check.json`` (and re-renders ``OUT/gpu-check.md``) as soon as it has
something, so a stage killed by its limit, or a lease that ends, still leaves every earlier figure
behind. This module touches no device: the shell calls it (``python -m tools.gpu_check_report``) to
mark the install step, a timed-out stage or the pytest results.

Layout: ``{"kit", "dry_run", "created", "updated", "machine": {...}, "stages": {name: stage}}`` with
``stage = {"status", "seconds", "limit_s", "reason", "results": [BenchResult dicts], ...}``;
status is one of :data:`STATUSES`.
"""

from __future__ import annotations

import argparse
import datetime
import math
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from gpt2.store.files import atomic_write_text, read_json_object, write_json_atomic
from tools.bench.cli import _fmt as _num  # the number format of the benchmarks' tables

JSON_NAME = "gpu-check.json"
MARKDOWN_NAME = "gpu-check.md"
# the order gpu-check.sh runs the stages in (and the Markdown lists them in); other names follow
STAGE_ORDER = ("install", "env", "tests", "train124", "hellaswag", "generate", "train350", "train774")
STATUSES = ("running", "ok", "failed", "error", "timeout", "skipped")
# extras shown in the Markdown "details" column, in this order, when an entry has them
DETAIL_KEYS = ("batch", "seq_len", "mfu", "peak_memory_mib", "seconds_per_step", "new_tokens", "items", "data")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Recorder:
    """Reads ``out_dir/gpu-check.json`` (or starts it), and saves JSON + Markdown after every change."""

    def __init__(self, out_dir: str | Path, dry_run: bool = False):
        self.out_dir = Path(out_dir)
        if self.json_path.is_file():
            self.data = read_json_object(self.json_path, "GPU check results")
        else:
            self.data = {"kit": "gpt2 gpu-check", "dry_run": dry_run, "created": _now(), "machine": {}, "stages": {}}

    @property
    def json_path(self) -> Path:
        return self.out_dir / JSON_NAME

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {"status": "running", "results": []})

    def start(self, name: str, limit_s: float | None = None) -> None:
        """A fresh entry for stage ``name`` (a rerun replaces the old one)."""
        self.data["stages"][name] = {"status": "running", "started": _now(), "limit_s": limit_s, "results": []}
        self.save()

    def result(self, name: str, result: Any) -> None:
        """Append one BenchResult (or its dict) to stage ``name`` and save."""
        entry = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        # JSON has no NaN/inf: a figure without a reference (no GPU peak on the dry run) is stored as null
        entry = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in entry.items()}
        self.stage(name)["results"].append(entry)
        self.save()

    def note(self, name: str, key: str, value: Any) -> None:
        self.stage(name)[key] = value
        self.save()

    def finish(self, name: str, status: str, seconds: float | None = None, reason: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown stage status {status!r}")
        stage = self.stage(name)
        stage["status"] = status
        if seconds is not None:
            stage["seconds"] = round(seconds, 2)
        if reason:
            stage["reason"] = reason
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out_dir / JSON_NAME, self.data)
        atomic_write_text(self.out_dir / MARKDOWN_NAME, render_markdown(self.data))


# ---------------------------------------------------------------- Markdown


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _details(entry: dict[str, Any]) -> str:
    parts = []
    for key in DETAIL_KEYS:
        if entry.get(key) is not None:
            value = f"{100 * entry[key]:.1f}%" if key == "mfu" else _num(entry[key])
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def _stage_rank(name: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)


def render_markdown(data: dict[str, Any]) -> str:
    """The summary: machine line, one row per stage, then results, test outcomes and profiles."""
    m = data.get("machine", {})
    title = m.get("gpu") or ("CPU dry run" if data.get("dry_run") else "no GPU recorded")
    lines = [f"# GPU check: {title}", ""]
    facts = [f"updated {data.get('updated', '-')}"]
    for key, label in (("driver", "driver"), ("torch", "torch"), ("cuda", "CUDA"), ("python", "Python")):
        if m.get(key):
            facts.append(f"{label} {m[key]}")
    if m.get("peak_flops"):
        facts.append(f"MFU against the data-sheet dense bf16 peak {m['peak_flops'] / 1e12:,.0f} TFLOP/s")
    lines += ["; ".join(facts) + ("  (dry run: tiny models on the CPU, numbers mean nothing)" * data.get("dry_run", 0))]
    lines += ["", "| stage | status | seconds | limit (s) | note |", "|---|---|--:|--:|---|"]
    unordered = data.get("stages", {})
    stages = {name: unordered[name] for name in sorted(unordered, key=_stage_rank)}
    for name, st in stages.items():
        row = [name, st.get("status"), _num(st.get("seconds")), _num(st.get("limit_s")), _cell(st.get("reason", ""))]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    results = [(name, e) for name, st in stages.items() for e in st.get("results", [])]
    if results:
        lines += ["", "## Results", "", "| stage | what | value | unit | reference | ratio | details |"]
        lines.append("|---|---|--:|---|--:|--:|---|")
        for name, e in results:
            ref = f"{_num(e.get('reference'))} ({e['reference_name']})" if e.get("reference_name") else "-"
            row = [name, e["name"], _num(e.get("ours")), e.get("unit", ""), ref, _num(e.get("ratio")), _details(e)]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    cases = stages.get("tests", {}).get("cases", [])
    if cases:
        lines += ["", "## CUDA tests", "", "| test | outcome | message |", "|---|---|---|"]
        lines += [f"| {c['name']} | {c['outcome']} | {_cell(c.get('message', ''))[:300]} |" for c in cases]
    for name, st in stages.items():
        if st.get("profile"):
            prof = st["profile"]
            lines += ["", f"## Profile of one step ({name}: {prof['what']})", "", prof.get("summary", "")]
            lines += ["", "| op | self time (ms) | share | calls |", "|---|--:|--:|--:|"]
            for op in prof["ops"]:
                share = f"{100 * op['share']:.1f}%"
                lines.append(f"| {_cell(op['op'])[:80]} | {op['self_ms']:.3f} | {share} | {op['calls']} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- pytest results

_VERBOSE_LINE = re.compile(r"^(\S*::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")


def parse_junit(path: Path) -> list[dict[str, str]]:
    """One {name, outcome, message} per test case of a pytest ``--junitxml`` file."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (child.get("message") or child.text or "").strip()
                break
        cases.append({"name": case.get("name", "?"), "outcome": outcome, "message": message})
    return cases


def parse_verbose_log(text: str) -> list[dict[str, str]]:
    """Outcomes from ``pytest -v`` lines (``tests/x.py::test_y PASSED``): all that is left after a timeout."""
    cases = []
    for line in text.splitlines():
        match = _VERBOSE_LINE.match(line.strip())
        if match:
            cases.append({"name": match[1].split("::")[-1], "outcome": match[2].lower(), "message": ""})
    return cases


def record_tests(rec: Recorder, log: Path, junit: Path | None, rc: int, seconds: float | None, limit: float | None):
    """Stage ``tests`` from pytest's junit file (or, when it was killed first, its verbose log)."""
    cases = parse_junit(junit) if junit is not None and junit.is_file() else parse_verbose_log(log.read_text())
    counts = {outcome: sum(c["outcome"] == outcome for c in cases) for outcome in ("passed", "failed", "skipped")}
    counts["error"] = sum(c["outcome"] == "error" for c in cases)
    if rc == 124:
        status, reason = "timeout", f"killed at its {limit} s limit"
    elif rc == 0:
        status, reason = "ok", ""
    else:
        status, reason = "failed", f"pytest exit code {rc}"
    if counts["passed"] == 0 and counts["skipped"] and rc == 0:
        status, reason = "skipped", next((c["message"] for c in cases if c["outcome"] == "skipped"), "")
    summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
    rec.start("tests", limit)
    stage = rec.stage("tests")
    stage.update(cases=cases, **counts)
    rec.finish("tests", status, seconds, "; ".join(part for part in (summary, reason) if part))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_check_report", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mark = sub.add_parser("mark", help="set a stage's status (install, skipped or timed-out stages)")
    mark.add_argument("out")
    mark.add_argument("stage")
    mark.add_argument("status", choices=STATUSES)
    tests = sub.add_parser("tests", help="record pytest's outcomes as stage 'tests'")
    tests.add_argument("out")
    tests.add_argument("log", type=Path, help="pytest -v output")
    tests.add_argument("--junit", type=Path)
    tests.add_argument("--rc", type=int, required=True, help="pytest's exit code (124: killed by timeout)")
    for p in (mark, tests):
        p.add_argument("--seconds", type=float)
        p.add_argument("--limit", type=float)
        p.add_argument("--reason", default="")
        p.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    rec = Recorder(args.out, dry_run=args.dry_run)
    if args.command == "tests":
        record_tests(rec, args.log, args.junit, args.rc, args.seconds, args.limit)
        return 0
    stage = rec.stage(args.stage)
    if args.limit is not None:
        stage["limit_s"] = args.limit
    if args.status == "timeout" and not args.reason:  # keep what the killed stage had already recorded
        args.reason = f"killed at its {args.limit} s limit after {len(stage['results'])} result(s)"
    rec.finish(args.stage, args.status, args.seconds, args.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
