"""`gpt2 bench`: the framework (suite loading, errors, JSON/table output) and quick smoke runs of the suites.

No timing assertions: the numbers only have to be real (positive, finite) and well-formed.
"""

import importlib.util
import json
import math
import sys
import types

import pytest

from gpt2.bench import cli as bench_cli
from gpt2.bench.core import BenchResult, interleaved_median_seconds
from gpt2.cli import main

REQUIRED_KEYS = {"name", "ours", "reference", "unit", "ratio"}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """--threads sets torch's global thread count; give the rest of the test session its own back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["bench", *argv])
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
    if importlib.util.find_spec(f"gpt2.bench.{suite}") is None:
        pytest.skip(f"suite gpt2.bench.{suite} has not landed yet")
    code, out, err = run_cli(capsys, suite, "--quick", "--json", "--repeat", "1", "--threads", "1")
    assert code == 0, err
    assert_valid_results(json.loads(out), suite)


@pytest.fixture
def fake_suites(monkeypatch):
    """Three suites: one that works, one whose run() raises, one whose module does not exist."""
    working = types.ModuleType("gpt2.bench.fake_ok")
    working.run = lambda device="cpu", repeat=3, quick=False: [BenchResult("fake speed", 2.0, 1.0, "tok/s", 2.0, "ref")]
    broken = types.ModuleType("gpt2.bench.fake_broken")

    def broken_run(device="cpu", repeat=3, quick=False):
        raise RuntimeError("kernel exploded")

    broken.run = broken_run
    monkeypatch.setitem(sys.modules, "gpt2.bench.fake_ok", working)
    monkeypatch.setitem(sys.modules, "gpt2.bench.fake_broken", broken)
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


def test_interleaved_median_seconds_times_every_function():
    calls = {"a": 0, "b": 0}

    def bump(name):
        calls[name] += 1

    medians = interleaved_median_seconds({"a": lambda: bump("a"), "b": lambda: bump("b")}, repeat=3, warmup=2)
    assert calls == {"a": 5, "b": 5}
    assert set(medians) == {"a", "b"} and all(t >= 0 for t in medians.values())


def test_tensor_memory_tracker_counts_live_tensor_bytes_exactly():
    import torch

    from gpt2.bench.memory import TensorMemoryTracker, peak_memory_bytes

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
