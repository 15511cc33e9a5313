"""The GPU check kit on the CPU: ``scripts/gpu-check.sh --dry-run`` runs every stage with the tiny model and
leaves a JSON and a Markdown summary naming each stage, so the kit is known to work before a GPU is lent."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tools.gpu_check_report import STAGE_ORDER, Recorder, parse_verbose_log, render_markdown
from train_helpers import REPO


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str]:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("OUT", None)
    command = ["bash", str(REPO / "scripts" / "gpu-check.sh"), "--dry-run", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    data = json.loads((out / "gpu-check.json").read_text())
    return result, data, (out / "gpu-check.md").read_text()


@pytest.mark.slow
def test_dry_run_records_every_stage_with_positive_numbers(dry_run):
    result, data, _ = dry_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert data["dry_run"] is True and list(data["stages"]) != []
    assert set(data["stages"]) == set(STAGE_ORDER)
    for name, stage in data["stages"].items():
        assert stage["status"] in ("ok", "skipped"), (name, stage)
        if stage["status"] == "skipped":
            assert stage["reason"], name  # a skip always says why
        assert stage["limit_s"] > 0 and stage["seconds"] >= 0, (name, stage)
    assert data["stages"]["install"]["status"] == "skipped"
    tests = data["stages"]["tests"]
    assert tests["status"] == "skipped" and "CUDA" in tests["reason"] and tests["skipped"] >= 5
    for name in ("env", "train124", "hellaswag", "generate", "train350", "train774"):
        results = data["stages"][name]["results"]
        assert results, name
        for entry in results:
            assert math.isfinite(entry["ours"]) and entry["ours"] > 0, (name, entry)
    train = data["stages"]["train124"]
    assert [e["batch"] for e in train["results"]] == [4, 2, 1]  # the largest first, as on the GPU (64, 32, 16)
    assert all(e["peak_memory_mib"] > 0 and e["mfu"] is None for e in train["results"])  # no GPU peak on a CPU
    assert train["profile"]["ops"] and all(op["self_ms"] >= 0 for op in train["profile"]["ops"])
    assert [e["batch"] for e in data["stages"]["generate"]["results"]] == [1, 2, 1]


def test_markdown_summary_names_every_stage_and_result(dry_run):
    _, data, markdown = dry_run
    assert markdown.startswith("# GPU check: CPU dry run")
    for name, stage in data["stages"].items():
        assert f"| {name} | {stage['status']} |" in markdown
        for entry in stage.get("results", []):
            assert entry["name"] in markdown
    assert "## Profile of one step (train124" in markdown
    assert markdown == render_markdown(data)  # the file is the rendering of the JSON beside it


def test_a_stage_killed_at_its_limit_keeps_its_earlier_results(tmp_path):
    rec = Recorder(tmp_path)
    rec.start("train124", limit_s=100)
    rec.result("train124", {"name": "train 124M B=16 T=1024", "ours": 5e5, "unit": "tok/s", "mfu": 0.4})
    # what gpu-check.sh does when `timeout` kills the stage: mark it from another process
    from tools.gpu_check_report import main

    assert main(["mark", str(tmp_path), "train124", "timeout", "--seconds", "100", "--limit", "100"]) == 0
    stage = json.loads((tmp_path / "gpu-check.json").read_text())["stages"]["train124"]
    assert stage["status"] == "timeout" and "after 1 result" in stage["reason"]
    assert stage["results"][0]["ours"] == 5e5
    markdown = (tmp_path / "gpu-check.md").read_text()
    assert "| train124 | timeout |" in markdown and "mfu=40.0%" in markdown


def test_pytest_outcomes_are_read_from_the_verbose_log_when_no_junit_file_was_written():
    log = "tests/test_cuda.py::test_a PASSED [ 50%]\ntests/test_cuda.py::test_b FAILED [100%]\nnoise\n"
    assert parse_verbose_log(log) == [
        {"name": "test_a", "outcome": "passed", "message": ""},
        {"name": "test_b", "outcome": "failed", "message": ""},
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_without_a_gpu_the_kit_says_so_in_one_line(capsys, tmp_path):
    from tools import gpu_check

    assert gpu_check.main(["env", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: --device cuda: no CUDA GPU is available on this machine (the dry run uses --device cpu)"
    )
    assert not (tmp_path / "gpu-check.json").exists()  # nothing recorded: the shell marks the stage
    assert gpu_check.main(["env", "--out", str(tmp_path), "--device", "cpu"]) == 1  # the CPU without --dry-run
    assert capsys.readouterr().err.strip() == (
        "error: the GPU check measures a CUDA GPU: use --device cuda (or --dry-run on the CPU)"
    )
