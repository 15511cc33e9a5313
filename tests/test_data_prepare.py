"""`gpt2 prepare` end to end through the CLI: sources, determinism, restart, and every bad input."""

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpt2.cli import main
from gpt2.data.cli import parse_count
from gpt2.data.loader import TokenShardLoader
from gpt2.data.manifest import read_manifest
from gpt2.data.shards import encode_header
from gpt2.tokenizer import get_tokenizer

REPO = Path(__file__).resolve().parents[1]
ENWIKI = REPO.parent / "shared" / "data" / "wiki" / "enwiki_sample.jsonl"


def write_corpus(path, n=80, bad_line=None):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            record = {"text": f"Article {i}. " + "The cat sat on the mat, then ran away. " * (i % 5 + 1)}
            f.write(json.dumps({"body": "x"} if i + 1 == bad_line else record) + "\n")
    return path


def prepare(capsys, *args):
    """Run `gpt2 prepare ...` in-process; returns (exit code, stdout, stderr lines)."""
    code = main(["prepare", *map(str, args), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())}


def test_files_source_end_to_end(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl")
    code, out, err = prepare(
        capsys, "files", corpus, "--out", tmp_path / "d", "--shard-tokens", "500", "--val-tokens", "300"
    )
    assert code == 0 and err == []
    manifest = read_manifest(tmp_path / "d")
    assert f"{manifest['total_tokens']:,} tokens" in out and manifest["documents"] == 80
    assert manifest["shards"][0] == {**manifest["shards"][0], "file": "corpus_val_000000.bin", "tokens": 300}
    x, y = TokenShardLoader(tmp_path / "d", "train", batch_size=2, seq_len=16).next_batch()
    assert x.shape == (2, 16) and (x[:, 1:] == y[:, :-1]).all()
    text = get_tokenizer().decode(TokenShardLoader(tmp_path / "d", "val", batch_size=1, seq_len=8).next_batch()[0][0])
    assert text.startswith("<|endoftext|>Article 0. The cat")
    assert prepare(capsys, "--verify", tmp_path / "d")[0] == 0


def test_output_is_bitwise_identical_for_1_and_2_workers(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl", n=300)
    for workers in (1, 2):
        args = ["files", corpus, "--out", tmp_path / f"w{workers}", "--shard-tokens", "2000", "--workers", workers]
        assert prepare(capsys, *args)[0] == 0
    assert snapshot(tmp_path / "w1") == snapshot(tmp_path / "w2")
    assert len(read_manifest(tmp_path / "w1")["shards"]) > 3


def test_failure_midway_keeps_finished_shards_and_rerun_completes_identically(tmp_path, capsys):
    reference_corpus = write_corpus(tmp_path / "ref.jsonl")
    options = ["--shard-tokens", "400", "--val-tokens", "400", "--workers", "2"]
    assert prepare(capsys, "files", reference_corpus, "--out", tmp_path / "ref", *options)[0] == 0
    corpus = write_corpus(tmp_path / "c.jsonl", bad_line=60)
    code, _, err = prepare(capsys, "files", corpus, "--out", tmp_path / "d", *options)
    assert code == 1 and err == [f"error: {corpus}:60: no string field 'text' (set it with --text-field)"]
    partial = read_manifest(tmp_path / "d", require_complete=False)
    assert not partial["complete"] and len(partial["shards"]) >= 3  # what was read before line 60 is on disk
    kept = {name: data for name, data in snapshot(tmp_path / "d").items() if name != "manifest.json"}
    code, _, err = prepare(capsys, "--verify", tmp_path / "d")
    assert code == 1 and "incomplete" in err[0] and "re-run the same" in err[0]
    write_corpus(corpus)  # fix the bad line, run the same command again: it resumes
    assert prepare(capsys, "files", corpus, "--out", tmp_path / "d", *options)[0] == 0
    assert all(snapshot(tmp_path / "d")[name] == data for name, data in kept.items())
    shards = lambda d: {k: v for k, v in snapshot(d).items() if k != "manifest.json"}  # noqa: E731
    assert shards(tmp_path / "d") == shards(tmp_path / "ref")


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: d / "missing.jsonl", "input file not found: {d}/missing.jsonl"),
        (lambda d: (d / "x.csv").write_text("a") and d / "x.csv", "{d}/x.csv: unknown file type"),
        (lambda d: write_corpus(d / "n.jsonl", bad_line=2), "{d}/n.jsonl:2: no string field 'text'"),
        (lambda d: (d / "u.txt").write_bytes(b"ok\n\xff\xfe") and d / "u.txt", "{d}/u.txt:2: invalid UTF-8"),
        (lambda d: (d / "e.jsonl").write_text('{"text": ""}\n') and d / "e.jsonl", "empty corpus"),
    ],
)
def test_bad_inputs_exit_1_with_one_error_line_and_lose_nothing(tmp_path, capsys, make_input, message):
    existing = tmp_path / "existing"
    assert (
        prepare(capsys, "files", write_corpus(tmp_path / "good.jsonl"), "--out", existing, "--val-tokens", "100")[0]
        == 0
    )
    before = snapshot(existing)
    bad = make_input(tmp_path)
    for out in (existing, tmp_path / "new"):
        code, _, err = prepare(capsys, "files", bad, "--out", out, "--val-tokens", "100")
        assert code == 1 and len(err) == 1 and err[0].startswith("error: ")
        if out == tmp_path / "new":  # (the existing dataset refuses the other source before reading it)
            assert message.format(d=tmp_path) in err[0]
    assert snapshot(existing) == before
    assert not (tmp_path / "new").exists()  # a run that fails before its first shard leaves nothing behind


@pytest.mark.parametrize(
    ("header", "size_tokens", "message"),
    [
        ((1, 1, 4), 4, "bad magic number 1"),
        ((20240520, 2, 4), 4, "unsupported shard version 2"),
        ((20240520, 1, 9), 4, "disagrees"),
    ],
)
def test_corrupt_shards_via_cli(tmp_path, capsys, header, size_tokens, message):
    assert (
        prepare(capsys, "files", write_corpus(tmp_path / "c.jsonl"), "--out", tmp_path / "d", "--val-tokens", "50")[0]
        == 0
    )
    shard = tmp_path / "d" / read_manifest(tmp_path / "d")["shards"][1]["file"]
    raw = np.frombuffer(encode_header(0), dtype="<i4").copy()
    raw[:3] = header
    shard.write_bytes(raw.tobytes() + bytes(2 * size_tokens))
    code, _, err = prepare(capsys, "--verify", tmp_path / "d")
    assert code == 1 and err == [f"error: {shard}: " + err[0].split(f"{shard}: ", 1)[1]] and message in err[0]


def test_other_options_into_existing_dataset_are_refused(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl")
    assert prepare(capsys, "files", corpus, "--out", tmp_path / "d", "--val-tokens", "50")[0] == 0
    before = snapshot(tmp_path / "d")
    code, _, err = prepare(capsys, "files", corpus, "--out", tmp_path / "d", "--val-tokens", "60")
    assert code == 1 and "other options" in err[0] and snapshot(tmp_path / "d") == before
    code, out, _ = prepare(capsys, "files", corpus, "--out", tmp_path / "d", "--val-tokens", "50")
    assert code == 0 and snapshot(tmp_path / "d") == before  # already complete: nothing to do


def test_demo_source_with_max_tokens(tmp_path, capsys):
    code, out, _ = prepare(capsys, "demo", "--out", tmp_path / "demo", "--max-tokens", "30k", "--val-tokens", "5k")
    manifest = read_manifest(tmp_path / "demo")
    assert code == 0 and manifest["total_tokens"] == 30_000
    assert [(s["split"], s["tokens"]) for s in manifest["shards"]] == [("val", 5000), ("train", 25000)]
    assert "Shakespeare" in manifest["source"]


def test_fineweb_edu_source_and_seed_script_with_local_files(tmp_path, capsys, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"Educational text number {i} about photosynthesis and cells." for i in range(40)]
    pq.write_table(pa.table({"text": texts, "score": [3.0] * 40}), tmp_path / "000_00000.parquet")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "fineweb.py",
            "--data-files",
            str(tmp_path / "000_00000.parquet"),
            "--out",
            str(tmp_path / "fw"),
            "--shard-tokens",
            "200",
            "--quiet",
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "fineweb.py"), run_name="__main__")
    assert exit_info.value.code == 0
    manifest = read_manifest(tmp_path / "fw")
    assert manifest["source"].startswith("fineweb-edu sample-10BT") and manifest["documents"] == 40
    assert manifest["shards"][0]["file"] == "edufineweb_val_000000.bin" and manifest["shards"][0]["tokens"] == 200
    assert manifest["options"]["shard_tokens"] == 200


def test_parse_count():
    assert [parse_count(s) for s in ("100M", "1.5k", "2e6", "300_000", "0")] == [10**8, 1500, 2 * 10**6, 300000, 0]


def test_enwiki_sample_slice(tmp_path, capsys):
    if not ENWIKI.is_file():
        pytest.skip(f"{ENWIKI} not present (../shared/data not present next to the repo)")
    args = ["files", ENWIKI, "--out", tmp_path / "wiki", "--max-tokens", "300000", "--shard-tokens", "100k"]
    assert prepare(capsys, *args, "--val-tokens", "50k")[0] == 0
    manifest = read_manifest(tmp_path / "wiki")
    assert manifest["total_tokens"] == 300_000
    assert [s["tokens"] for s in manifest["shards"]] == [50_000, 100_000, 100_000, 50_000]
    first_title = json.loads(ENWIKI.open().readline())["title"]
    val = TokenShardLoader(tmp_path / "wiki", "val", batch_size=1, seq_len=16).next_batch()[0][0]
    assert get_tokenizer().decode(val).startswith("<|endoftext|>" + first_title)


def test_kill_9_midway_then_rerun_equals_uninterrupted(tmp_path, capsys):
    """A real `kill -9` of `gpt2 prepare` mid-run: the input is a FIFO, so the process is provably
    still running (blocked on more input) after its first shards are on disk when it is killed."""
    lines = [json.dumps({"text": f"Line {i}: " + "words and more words " * (i % 9 + 1)}) + "\n" for i in range(400)]
    options = ["--shard-tokens", "1000", "--val-tokens", "1000", "--workers", "1", "--quiet"]
    reference = tmp_path / "reference.jsonl"
    reference.write_text("".join(lines))
    assert prepare(capsys, "files", reference, "--out", tmp_path / "ref", *options)[0] == 0

    corpus = tmp_path / "corpus.jsonl"
    os.mkfifo(corpus)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "gpt2", "prepare", "files", str(corpus), "--out", str(out), *options]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 90
    try:
        while True:  # open the FIFO once the process reads it (never block if it died instead)
            assert process.poll() is None, "gpt2 prepare exited before reading its input"
            assert time.monotonic() < deadline, "gpt2 prepare did not open its input"
            try:
                fd = os.open(corpus, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.05)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w") as fifo:
            fifo.writelines(lines[:200])
            fifo.flush()
            manifest = out / "manifest.json"
            while not (manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 3):
                assert process.poll() is None and time.monotonic() < deadline, "no shards written"
                time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    except BrokenPipeError:
        pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    partial = read_manifest(out, require_complete=False)
    assert process.returncode == -signal.SIGKILL and not partial["complete"] and len(partial["shards"]) >= 3
    corpus.unlink()
    corpus.write_text("".join(lines))  # the same path, now complete: the same command resumes
    assert prepare(capsys, "files", corpus, "--out", out, *options)[0] == 0
    assert snapshot(out).keys() == snapshot(tmp_path / "ref").keys()
    assert {k: v for k, v in snapshot(out).items() if k != "manifest.json"} == {
        k: v for k, v in snapshot(tmp_path / "ref").items() if k != "manifest.json"
    }
    assert read_manifest(out)["shards"] == read_manifest(tmp_path / "ref")["shards"]


def small_corpus(path: Path, articles: int = 1500) -> Path:
    """~1,500 Wikipedia articles (~0.5M tokens) as JSONL, or synthetic text of a similar kind without ../shared."""
    if ENWIKI.is_file():
        with ENWIKI.open(encoding="utf-8") as src:
            path.write_text("".join(next(src) for _ in range(articles)), encoding="utf-8")
        return path
    return write_corpus(path, n=articles)


def test_small_corpus_is_split_90_10_and_says_so(tmp_path, capsys):
    corpus = small_corpus(tmp_path / "small.jsonl")
    code, out, err = prepare(capsys, "files", corpus, "--out", tmp_path / "d")  # default val size: 1M tokens
    assert code == 0, err
    manifest = read_manifest(tmp_path / "d")
    total = manifest["total_tokens"]
    splits = {split: sum(s["tokens"] for s in manifest["shards"] if s["split"] == split) for split in ("val", "train")}
    print(f"small corpus: {total:,} tokens -> val {splits['val']:,}, train {splits['train']:,}")
    assert total < 2_000_000 and splits == {"val": int(total * 0.1), "train": total - int(total * 0.1)}
    assert len(err) == 1 and err[0].startswith("note: ") and "90/10" in err[0] and f"{total:,} tokens" in err[0]
    x, _ = TokenShardLoader(tmp_path / "d", "train", batch_size=4, seq_len=64).next_batch()
    assert x.shape == (4, 64)
    # the same corpus with an explicit val size is kept exactly, without a note
    code, _, err = prepare(capsys, "files", corpus, "--out", tmp_path / "exact", "--val-tokens", "5000")
    assert code == 0 and err == [] and read_manifest(tmp_path / "exact")["shards"][0]["tokens"] == 5000


def test_explicit_val_tokens_larger_than_the_corpus_is_an_error(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl")
    assert prepare(capsys, "files", corpus, "--out", tmp_path / "ref", "--val-tokens", "10")[0] == 0
    total = read_manifest(tmp_path / "ref")["total_tokens"]
    for val in (total, 2 * total, 10**6):
        code, _, err = prepare(capsys, "files", corpus, "--out", tmp_path / "d", "--val-tokens", val)
        assert code == 1 and len(err) == 1, err
        assert err[0].startswith(f"error: --val-tokens {val:,} is not smaller than the corpus ({total:,} tokens)")
        assert not (tmp_path / "d").exists()  # nothing written, not even the directory


def test_train_on_a_dataset_without_train_shards_names_the_fix(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl")
    assert prepare(capsys, "files", corpus, "--out", tmp_path / "d")[0] == 0
    manifest_file = tmp_path / "d" / "manifest.json"  # as prepared before small corpora were split: all val
    manifest = json.loads(manifest_file.read_text())
    manifest["shards"] = [{**s, "split": "val"} for s in manifest["shards"]]
    manifest_file.write_text(json.dumps(manifest))
    code = main(["train", "--size", "tiny", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(err) == 1 and "has no 'train' shards" in err[0]
    assert f"`gpt2 prepare files {corpus} --out NEW_DIR`" in err[0] and not (tmp_path / "run").exists()
