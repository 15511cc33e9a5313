"""`python -m tools.bench`: the framework (suite loading, errors, JSON/table output) and quick smoke runs of the suites.

No timing assertions: the numbers only have to be real (positive, finite) and well-formed.
"""

import importlib.util
import json
import math
import subprocess
import sys
import types

import pytest

from tools.bench import cli as bench_cli
from tools.bench.cli import main
from tools.bench.core import BenchResult, interleaved_median_seconds
from train_helpers import REPO

REQUIRED_KEYS = {"name", "ours", "reference", "unit", "ratio"}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """--threads sets torch's global thread count; give the rest of the test session its own back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_valid_results(entries: list, suite: str) -> None:
    assert isinstance(entries, list) and entries, f"{suite}: expected a non-empty JSON array"
    for entry in entries:
        assert entry.keys() >= REQUIRED_KEYS, entry
        assert "error" not in entry, entry
        for key in ("ours", "reference", "ratio"):
            assert isinstance(entry[key], (int, float)) and math.isfinite(entry[key]) and entry[key] > 0, (key, entry)
        assert entry["unit"]
        assert entry["machine"]["cpu"] and entry["machine"]["versions"]["torch"]
        assert entry["machine"]["threads"] >= 1


def test_train_quick_json(capsys, tmp_path):
    out_file = tmp_path / "bench.json"
    quick = ("--quick", "--json", "--repeat", "1", "--threads", "1")
    code, out, err = run_cli(capsys, "train", *quick, "--out", str(out_file))
    assert code == 0, err
    entries = json.loads(out)
    assert_valid_results(entries, "train")
    names = [e["name"] for e in entries]
    assert any("tok/s" in n for n in names) and any("peak memory" in n for n in names)
    speed = next(e for e in entries if e["unit"] == "tok/s")
    assert speed["ratio"] == pytest.approx(speed["ours"] / speed["reference"])
    assert speed["reference_name"].startswith("transformers")
    assert json.loads(out_file.read_text()) == entries


@pytest.mark.parametrize("suite", [s for s in bench_cli.SUITES if s != "train"])
def test_other_suites_quick(capsys, suite):
    if importlib.util.find_spec(f"tools.bench.{suite}") is None:
        pytest.skip(f"suite tools.bench.{suite} has not landed yet")
    code, out, err = run_cli(capsys, suite, "--quick", "--json", "--repeat", "1", "--threads", "1")
    assert code == 0, err
    assert_valid_results(json.loads(out), suite)


@pytest.fixture
def fake_suites(monkeypatch):
    """Three suites: one that works, one whose run() raises, one whose module does not exist."""
    working = types.ModuleType("tools.bench.fake_ok")
    working.run = lambda device="cpu", repeat=3, quick=False: [BenchResult("fake speed", 2.0, 1.0, "tok/s", 2.0, "ref")]
    broken = types.ModuleType("tools.bench.fake_broken")

    def broken_run(device="cpu", repeat=3, quick=False):
        raise RuntimeError("kernel exploded")

    broken.run = broken_run
    monkeypatch.setitem(sys.modules, "tools.bench.fake_ok", working)
    monkeypatch.setitem(sys.modules, "tools.bench.fake_broken", broken)
    monkeypatch.setattr(bench_cli, "SUITES", ("fake_ok", "fake_broken", "fake_missing"))


def test_missing_and_failing_suites_are_reported_and_exit_nonzero(capsys, fake_suites):
    code, out, err = run_cli(capsys, "all", "--json")
    assert code == 1
    entries = {e["name"]: e for e in json.loads(out)}
    assert entries["fake speed"]["ratio"] == 2.0 and entries["fake speed"]["suite"] == "fake_ok"
    assert "kernel exploded" in entries["fake_broken"]["error"]
    assert "not available" in entries["fake_missing"]["error"]
    assert entries["fake_missing"]["ours"] is None
    assert "fake_broken" in err and "fake_missing" in err


def test_table_output_lists_results_errors_and_machine(capsys, fake_suites):
    code, out, _ = run_cli(capsys, "all")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["name", "ours", "reference", "unit", "ratio"]
    assert any(line.startswith("fake speed") and line.endswith("2x") for line in lines)
    assert any("fake_broken: error: RuntimeError: kernel exploded" in line for line in lines)
    assert any(line.startswith("machine: ") and "torch " in line for line in lines)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_markdown_output(capsys, fake_suites):
    code, out, _ = run_cli(capsys, "all", "--markdown")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("| name | ours | reference | unit | ratio |")
    assert "| fake speed | 2 | 1 | tok/s | 2x | ref |" in lines
    assert any(line.startswith("| fake_missing |") and "error: suite module" in line for line in lines)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--repeat", "0"], "--repeat must be at least 1, got 0"),
        (["train", "--threads", "0"], "--threads must be at least 1"),
        (["nosuch"], "unknown benchmark suite 'nosuch'"),
        (["train", "--device", "tpu9"], "--device"),
    ],
)
def test_bad_arguments_exit_1_with_one_error_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.skipif(_cuda_available(), reason="checks the message given when no GPU is present")
def test_cuda_without_gpu_is_a_clear_error(capsys):
    code, _, err = run_cli(capsys, "train", "--device", "cuda")
    assert code == 1 and "no CUDA GPU" in err


def test_interleaved_median_seconds_times_every_function_and_rotates_who_goes_first():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    medians = interleaved_median_seconds(fns, repeat=4, warmup=1)
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab" + "abc"  # warm-up, then each round starts one later
    assert set(medians) == {"a", "b", "c"} and all(t >= 0 for t in medians.values())


def test_python_m_tools_bench_runs_from_the_repository_root():
    """What the docs say to type; bad input is one error line (the suites run in-process above)."""
    command = [sys.executable, "-m", "tools.bench", "nosuch"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and result.stderr.startswith("error: unknown benchmark suite 'nosuch'")


def test_tensor_memory_tracker_counts_live_tensor_bytes_exactly():
    import torch

    from tools.bench.memory import TensorMemoryTracker, peak_memory_bytes

    mib = 2**20
    with TensorMemoryTracker() as tracker:
        a = torch.ones(mib // 4)  # 1 MiB of float32
        view = a[:10]  # shares a's storage: not counted again
        a.add_(1)  # in place: same storage
        b = torch.zeros(2 * mib // 4)  # +2 MiB -> 3 MiB live
        del a, view
        c = torch.zeros(mib // 4)  # a is gone before c arrives: 3 MiB live again, not 4
        assert tracker.current_bytes == 3 * mib
        del b, c
    assert tracker.peak_bytes == 3 * mib

    def train_step():
        layer = torch.nn.Linear(256, 256)  # 256*256 + 256 floats
        layer(torch.ones(8, 256)).sum().backward()

    assert peak_memory_bytes(train_step, "cpu") >= 2 * (256 * 256 + 256) * 4  # weights and their gradients


def test_train_suite_times_the_real_trainer_step(tmp_path, monkeypatch):
    """ "ours" is Trainer.train_step itself (issue 22: the suite used to time a copy of the step), with the fused
    loss for "ours" and the plain loss for "ours-plain"; each call is a real update on the random-token data."""
    import torch

    from gpt2.train.trainer import Trainer
    from tools.bench import train as bench_train

    seen = []
    real_step = Trainer.train_step

    def spy(self, pacer):
        before = self.model.lm_head.weight.detach().clone()
        loss, _, finite = real_step(self, pacer)
        seen.append((self.cfg.fused_loss, loss.item(), finite, not torch.equal(before, self.model.lm_head.weight)))
        return loss, _, finite

    monkeypatch.setattr(Trainer, "train_step", spy)
    config = bench_train.case_config(bench_train.TrainCase("tiny", 2, 32, 1))
    for impl in ("ours", "ours-plain"):
        bench_train.make_train_step(impl, config, 2, 32, torch.device("cpu"), tmp_path)()
    assert [(fused, finite, updated) for fused, _, finite, updated in seen] == [(True, True, True), (False, True, True)]
    for _, loss, _, _ in seen:  # a fresh model on uniformly random tokens: about ln(vocab) = 10.8
        assert abs(loss - math.log(50257)) < 0.5


def test_the_machine_line_names_the_cpu_family_and_its_vector_features():
    """Issue 30: the docs called a CPU with AVX-512 and AVX512_BF16 "Zen 3, AVX2"; the results now say what it has."""
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines()
    flags = next(line for line in lines if line.startswith("flags")).split(":", 1)[1].split()
    family = next(line for line in lines if line.startswith("cpu family")).split(":", 1)[1].strip()
    name = bench_cli.cpu_model()
    assert f"family {family} " in name
    for feature in ("avx2", "avx512_bf16", "amx_bf16"):
        assert (feature in name.rstrip(")").split(", ")[-1].split("/")) == (feature in flags), feature
