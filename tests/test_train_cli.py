"""``gpt2 train`` on bad input: exit 1, one ``error:`` line, and an existing run left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gpt2.cli import main
from gpt2.data import prepare_documents
from train_helpers import QUIET, TINY_RUN, prepared_dataset, run_train, synthetic_texts


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def existing_run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("existing") / "run"
    assert main(["train", *TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(out), "--steps", "1"]) == 0
    return out


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: any write, even of the same content, shows."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }  # noqa: E501


def fails_cleanly(argv: list[str], capsys, message: str) -> None:
    capsys.readouterr()
    assert main(["train", *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--size", "huge"], "unknown model size 'huge'"),
        (["--seq-len", "256"], "--seq-len 256 exceeds the model's context window (block_size 128)"),
        (["--batch-tokens", "100"], "--batch-tokens 100 is not divisible by micro-batch x seq-len x world size"),
        (["--size", "mini"], "cannot resume from"),  # the run holds a tiny model
        (["--no-resume"], "--no-resume"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--fsdp"], "--fsdp needs several processes"),
        (["--device", "tpu"], "--device 'tpu' is not a device"),
    ],
)
def test_bad_options_leave_the_run_untouched(existing_run, dataset, capsys, extra, message):
    before = snapshot(existing_run)
    fails_cleanly(
        [*TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(existing_run), "--steps", "3", *extra], capsys, message
    )  # noqa: E501
    assert snapshot(existing_run) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(existing_run, dataset, capsys):
    argv = [*TINY_RUN, "--data", str(dataset), "--out", str(existing_run), "--device", "cuda"]
    fails_cleanly(argv, capsys, "--device cuda: CUDA is not available")


def test_data_dir_without_manifest(existing_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(existing_run)
    fails_cleanly([*TINY_RUN, *QUIET, "--data", str(empty), "--out", str(existing_run)], capsys, "has no manifest.json")
    assert snapshot(existing_run) == before


def test_resume_from_a_checkpoint_of_another_config(existing_run, dataset, tmp_path, capsys):
    config = tmp_path / "wide.json"
    config.write_text(json.dumps({"size": "tiny", "model": {"n_embd": 128}}))
    before = snapshot(existing_run)
    argv = [*TINY_RUN, *QUIET, "--config", str(config), "--data", str(dataset), "--out", str(existing_run)]
    fails_cleanly(argv, capsys, "it was trained with another model config (n_embd=64 (run wants 128))")
    assert snapshot(existing_run) == before


def test_resume_on_another_dataset(existing_run, tmp_path, capsys):
    other = tmp_path / "other-data"
    prepare_documents(synthetic_texts(30, seed=1), other, shard_tokens=2_000, val_tokens=500)
    before = snapshot(existing_run)
    argv = [*TINY_RUN, *QUIET, "--data", str(other), "--out", str(existing_run)]
    fails_cleanly(argv, capsys, "cannot resume the data loader")
    assert snapshot(existing_run) == before


def test_unwritable_run_dir(dataset, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    argv = [*TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(blocker / "run")]
    fails_cleanly(argv, capsys, "cannot create or write the run directory")
    assert blocker.read_text() == "not a directory"


def test_explicit_resume_without_checkpoint(dataset, tmp_path, capsys):
    argv = [*TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(tmp_path / "run"), "--resume"]
    fails_cleanly(argv, capsys, "has no checkpoint to resume from")


def test_real_process_exit_code_and_single_line(dataset, tmp_path):
    result = run_train([*TINY_RUN, *QUIET, "--data", str(dataset), "--out", str(tmp_path), "--batch-tokens", "100"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --batch-tokens 100 is not divisible by micro-batch x seq-len x world size = 2 x 32 x 1 = 64; "
        "pick --batch-tokens as a multiple of 64 (e.g. 128)"
    ]
