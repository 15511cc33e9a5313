"""The run directory: latest pointer, step_N listing and pruning, stale temporaries, metrics.jsonl, run.json."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import gpt2
from gpt2 import GPT2Error
from gpt2.store.rundir import (
    MetricsLog,
    RunDir,
    RunLock,
    check_run_dir,
    find_resume_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    read_metrics,
    read_run_info,
    remove_stale_temporaries,
    truncate_metrics,
    write_latest,
    write_run_info,
)


def make_steps(run_dir, *steps):
    for step in steps:
        RunDir(run_dir).checkpoint(step).mkdir(parents=True)


def test_rundir_does_not_import_torch():
    # An empty stand-in for the package root, so only what gpt2.store.rundir itself imports gets loaded.
    code = (
        "import sys, types; pkg = types.ModuleType('gpt2'); pkg.__path__ = [sys.argv[1]]; sys.modules['gpt2'] = pkg; "
        "import gpt2.store.rundir; print('torch' in sys.modules, any(m.startswith('gpt2.train') for m in sys.modules))"
    )
    package = str(Path(gpt2.__file__).parent)
    out = subprocess.run([sys.executable, "-c", code, package], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_latest_pointer_round_trip_and_bad_pointer(tmp_path):
    assert latest_checkpoint(tmp_path) is None  # no pointer yet
    make_steps(tmp_path, 7)
    write_latest(tmp_path, RunDir(tmp_path).checkpoint(7).name)
    assert (tmp_path / "latest").read_text() == "step_000007\n"
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000007"
    assert not list(tmp_path.glob(".latest*"))  # no temporary left behind
    write_latest(tmp_path, "step_000009")  # points at a directory that is not there
    with pytest.raises(GPT2Error, match=r"latest points to 'step_000009', which does not exist"):
        latest_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"\n",
        b"../step_000007",
        b"step_000007/../step_000007",
        b"\xff\xfe garbage",
        b"step_" + b"7" * 100,
        b"step_\xd9\xa3",
    ],
)
def test_latest_holds_only_a_step_name_and_is_never_echoed(tmp_path, content):
    make_steps(tmp_path, 7)
    (tmp_path / "latest").write_bytes(content)
    with pytest.raises(GPT2Error, match=r"latest is corrupt: it must hold the name of a checkpoint directory") as err:
        latest_checkpoint(tmp_path)
    assert "garbage" not in str(err.value) and "777" not in str(err.value)


def test_latest_never_follows_a_link_out_of_the_run(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside"
    make_steps(outside, 7)
    (outside / "secret").write_text("step_000007\n")  # even a valid name is not read through a link out
    run.mkdir()
    (run / "latest").symlink_to(outside / "secret")
    with pytest.raises(GPT2Error, match=r"run/latest is a link out of the run directory; not following it$"):
        latest_checkpoint(run)
    (run / "latest").unlink()
    (run / "step_000007").symlink_to(outside / "step_000007")
    write_latest(run, "step_000007")
    with pytest.raises(GPT2Error, match=r"points to step_000007, a link out of the run directory"):
        latest_checkpoint(run)
    (run / "step_000007").unlink()
    make_steps(run, 6)
    (run / "step_000007").symlink_to("step_000006")  # a link that stays inside is followed
    assert latest_checkpoint(run) == run / "step_000007"
    (run / "pointer").write_text("step_000006\n")
    (run / "latest").unlink()
    (run / "latest").symlink_to("pointer")
    assert latest_checkpoint(run) == run / "step_000006"


def test_list_only_complete_step_directories(tmp_path):
    make_steps(tmp_path, 12, 3)
    (tmp_path / ".step_000013.tmp-abc").mkdir()  # being written
    (tmp_path / "step_000014").write_text("not a directory")
    (tmp_path / "step_x").mkdir()
    assert list_checkpoints(tmp_path) == [(3, tmp_path / "step_000003"), (12, tmp_path / "step_000012")]
    assert list_checkpoints(tmp_path / "missing") == []


def test_prune_keeps_the_newest_and_never_latest(tmp_path):
    make_steps(tmp_path, 1, 2, 3, 4)
    write_latest(tmp_path, "step_000002")  # e.g. newer ones were written by a run being resumed
    deleted = prune_checkpoints(tmp_path, keep_last=1)
    assert sorted(p.name for p in deleted) == ["step_000001", "step_000003"]
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000002", "step_000004"]
    assert prune_checkpoints(tmp_path, keep_last=0) == []  # 0 = keep everything
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000002"


def test_stale_temporaries_only_ours(tmp_path):
    make_steps(tmp_path, 3, 5)
    ours = [tmp_path / ".step_000006.tmp-k2j4", tmp_path / ".step_000010.tmp-zz"]
    for path in ours:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"half")
    ours += [tmp_path / ".step_000003.old-123", tmp_path / ".metrics.jsonl.abc.tmp", tmp_path / ".latest.x1.tmp"]
    ours[2].mkdir()  # the old step_000003 of a replace that got as far as renaming the new one in
    ours[3].write_text("x")
    ours[4].write_text("step_000004\n")
    only_copy = tmp_path / ".step_000006.old-77"  # killed between the renames: the only step_000006 there is
    only_copy.mkdir()
    (only_copy / "config.json").write_text("{}")
    keep = [tmp_path / "step_tmp-1", tmp_path / ".step_000007.tmp-file", tmp_path / ".latest.notes"]
    keep[0].mkdir()
    keep[1].write_text("a file, not a checkpoint being written")
    keep[2].write_text("not one of our temp names")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(ours)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in keep)
    assert (tmp_path / "step_000005").is_dir() and (tmp_path / "step_000006" / "config.json").is_file()


def test_find_resume_checkpoint(tmp_path):
    assert find_resume_checkpoint(tmp_path / "new", None) is None
    with pytest.raises(GPT2Error, match="--resume: .* has no checkpoint"):
        find_resume_checkpoint(tmp_path, True)
    make_steps(tmp_path, 2)
    with pytest.raises(GPT2Error, match="checkpoint directories but no 'latest' pointer"):
        find_resume_checkpoint(tmp_path, None)
    write_latest(tmp_path, "step_000002")
    assert find_resume_checkpoint(tmp_path, None) == find_resume_checkpoint(tmp_path, True) == tmp_path / "step_000002"
    with pytest.raises(GPT2Error, match=r"--no-resume: .* already holds checkpoints \(latest step_000002\)"):
        find_resume_checkpoint(tmp_path, False)


def test_metrics_log_torn_line_and_truncate(tmp_path):
    rows = [{"type": "train", "step": s, "loss": 1.0 / s} for s in range(1, 6)]
    log = MetricsLog(tmp_path)
    for row in rows:
        log.write(row)
    log.close()
    assert read_metrics(tmp_path) == rows
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "st')  # killed mid-write
    assert read_metrics(tmp_path) == rows  # the torn last line is skipped
    assert truncate_metrics(tmp_path, 3) == 2
    assert read_metrics(tmp_path) == rows[:3]
    assert (tmp_path / "metrics.jsonl").read_text().endswith("\n")  # the torn line is gone too
    assert truncate_metrics(tmp_path / "none", 3) == 0 and read_metrics(tmp_path / "none") == []


def test_metrics_corrupt_middle_line_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "step": 1}\n{oops\n{"type": "train", "step": 2}\n')
    with pytest.raises(GPT2Error, match=r"metrics.jsonl:2: malformed JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"type": "mystery", "step": 1}\n')
    with pytest.raises(GPT2Error, match=r"metrics.jsonl:1: expected a JSON object with \"type\" one of"):
        read_metrics(tmp_path)


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"type": "train", "step": "3", "loss": 2.0}', '"step" must be a whole number, got str'),
        ('{"type": "train", "step": -1, "loss": 2.0}', '"step" must be a whole number, got -1'),
        ('{"type": "train", "step": 3, "loss": "abc"}', '"loss" must be a number or null, got str'),
        ('{"type": "eval", "step": 3, "val_loss": [1]}', '"val_loss" must be a number or null, got list'),
        ('{"type": "train", "step": 3, "loss": 1' + "0" * 30 + "}", '"loss" must be a number or null, got a huge'),
        ('{"type": "sample", "step": 3, "prompt": 3, "text": ""}', '"prompt" must be a string, got 3'),
        ('{"type": "train", "loss": 1.0}', 'a train row needs a "step"'),
        ("[" * 100_000, "malformed JSON (nested too deeply)"),
        ('{"type": "train", "step": ' + "9" * 5000 + "}", "malformed JSON (Exceeds the limit (4300 digits)"),
    ],
)
def test_metrics_rows_of_the_wrong_types_are_errors(tmp_path, row, message):
    """Issue 28.16: what the report, the app and the trackers format as numbers is checked once, here."""
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": 2.5, "skipped": true}\n' + row + "\n")
    with pytest.raises(GPT2Error, match=re.escape(f"metrics.jsonl:2: {message}")):
        read_metrics(tmp_path)


# A process that holds the lock of RUN_DIR (argv[2]) until killed; only gpt2.store.rundir is imported (fast, no torch).
HOLDER = (
    "import sys, time, types; pkg = types.ModuleType('gpt2'); pkg.__path__ = [sys.argv[1]]; sys.modules['gpt2'] = pkg; "
    "from gpt2.store.rundir import RunLock; lock = RunLock(sys.argv[2]); lock.claim(); print('locked', flush=True); "
    "time.sleep(120)"
)


def test_one_train_per_run_dir_and_a_dead_holders_lock_is_taken_over(tmp_path):
    """Issue 28.10: RUN_DIR/train.lock is flock'ed for the holder's lifetime; another is refused, naming the holder's
    pid and host; ``kill -9`` leaves the file (and its note) but not the lock, which the next run takes over."""
    package = str(Path(gpt2.__file__).parent)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, package, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    by = f"pid {holder.pid} on {socket.gethostname()}"
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(GPT2Error, match=rf"^--out {tmp_path} is in use by gpt2 train \({re.escape(by)}\); wait"):
            RunLock(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)  # taken over; taking it writes nothing: the dead holder's note is still there
    assert (tmp_path / "train.lock").read_text() == by + "\n"
    lock.claim()
    assert (tmp_path / "train.lock").read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    with pytest.raises(GPT2Error, match="is in use by gpt2 train"):  # another open in the same process: refused too
        RunLock(tmp_path)
    lock.close()
    RunLock(tmp_path).close()  # released by closing


def test_the_lock_file_is_never_followed_as_a_link(tmp_path):
    (tmp_path / "secret").write_text("keep")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.lock").symlink_to(tmp_path / "secret")
    with pytest.raises(GPT2Error, match=r"--out .*/run: cannot open its lock file train.lock \(too many levels of sym"):
        RunLock(tmp_path / "run")
    assert (tmp_path / "secret").read_text() == "keep"


def test_run_info_fresh_then_resumes_merge(tmp_path):
    first = write_run_info(tmp_path, {"world_size": 2, "device": "cpu"})
    assert first["resumes"] == [] and read_run_info(tmp_path) == first
    second = write_run_info(tmp_path, {"world_size": 1, "device": "cpu"}, resumed_at=40)
    third = write_run_info(tmp_path, {"world_size": 4, "device": "cuda"}, resumed_at=80)
    assert third["start_time"] == first["start_time"] and third["device"] == "cuda"
    assert [(r["step"], r["world_size"]) for r in third["resumes"]] == [(40, 1), (80, 4)]
    assert third["resumes"][0]["time"] == second["resumes"][0]["time"]
    assert json.loads((tmp_path / "run.json").read_text()) == third
    (tmp_path / "run.json").write_text("{torn")
    with pytest.raises(GPT2Error, match="corrupt run info"):
        read_run_info(tmp_path)
    replaced = write_run_info(tmp_path, {"world_size": 1}, resumed_at=90)  # a bad old run.json never blocks a resume
    assert replaced["resumes"] == [] and read_run_info(tmp_path) == replaced
    assert read_run_info(tmp_path / "none") == {}


def test_run_dir_checks(tmp_path):
    check_run_dir(tmp_path / "new" / "run", checkpoint_bytes=1000, keep_last=3)
    assert (tmp_path / "new" / "run").is_dir() and list((tmp_path / "new" / "run").iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GPT2Error, match="cannot create or write the run directory"):
        check_run_dir(blocker / "run", checkpoint_bytes=1000, keep_last=3)
    with pytest.raises(GPT2Error, match=r"GB free, but 3 kept checkpoint\(s\) plus the one being written need"):
        check_run_dir(tmp_path, checkpoint_bytes=10**18, keep_last=3)  # a disk that is (effectively) full
