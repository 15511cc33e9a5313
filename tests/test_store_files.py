"""Crash-safe writes and checked JSON reads (gpt2.store.files)."""

import json
import os
import stat
import subprocess
import sys

import pytest

from gpt2.errors import GPT2Error
from gpt2.store.files import (
    atomic_directory,
    atomic_output,
    atomic_write_text,
    read_json,
    read_json_object,
    write_json_atomic,
)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_json_atomic_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"b": 1, "a": [1.5, None]})
    write_json_atomic(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_exception_on_first_save_leaves_nothing_under_the_final_name(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "new") as tmp:
        (tmp / "partial").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_removes_the_temporary_on_error(tmp_path):
    with pytest.raises(ValueError), atomic_output(tmp_path / "plot.png") as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("writer failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(tmp_path / "plot.png") as tmp:
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png" and len(list(tmp_path.iterdir())) == 1


def test_results_follow_the_umask_not_the_tempfile_modes(tmp_path):
    # a child process, so the umask of the test runner stays untouched
    code = (
        "import os, sys; os.umask(0o022); from pathlib import Path; from gpt2.store.files import *;"
        "d = Path(sys.argv[1]);"
        "atomic_write_text(d / 'f.txt', 'x');"
        'exec(\'with atomic_directory(d / "ck") as t: (t / "w").write_text("y")\')'
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert mode(tmp_path / "f.txt") == 0o644
    assert mode(tmp_path / "ck") == 0o755 and mode(tmp_path / "ck" / "w") == 0o644


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(GPT2Error, match="run.json not found"):
        read_json(tmp_path / "run.json", "run.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(GPT2Error, match=r"corrupt manifest .*bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json", "manifest")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(GPT2Error, match="expected a JSON object, got list"):
        read_json_object(tmp_path / "list.json")
    atomic_write_text(tmp_path / "ok.json", '{"a": 1}')
    assert read_json_object(tmp_path / "ok.json") == {"a": 1}


def test_file_from_env_names_the_variable_and_what_to_put_there(tmp_path, monkeypatch):
    from gpt2.store.files import file_from_env

    monkeypatch.delenv("GPT2_TEST_FILE", raising=False)
    assert file_from_env("GPT2_TEST_FILE", "name a file") is None
    monkeypatch.setenv("GPT2_TEST_FILE", "")
    assert file_from_env("GPT2_TEST_FILE", "name a file") is None
    monkeypatch.setenv("GPT2_TEST_FILE", str(tmp_path / "missing.jsonl"))
    message = r"^\$GPT2_TEST_FILE is '.*missing.jsonl', which is not a file \(name a file\)$"
    with pytest.raises(GPT2Error, match=message):
        file_from_env("GPT2_TEST_FILE", "name a file")
    (tmp_path / "there.jsonl").write_text("{}\n")
    monkeypatch.setenv("GPT2_TEST_FILE", str(tmp_path / "there.jsonl"))
    assert file_from_env("GPT2_TEST_FILE", "name a file") == tmp_path / "there.jsonl"
