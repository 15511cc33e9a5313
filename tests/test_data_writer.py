"""ShardWriter: exact shard sizes, val split, max tokens, and restart after an interruption."""

import numpy as np
import pytest

from gpt2.data.manifest import read_manifest
from gpt2.data.prepare import prepare_documents
from gpt2.data.shards import open_shard
from gpt2.data.writer import ShardWriter
from gpt2.errors import GPT2Error
from gpt2.tokenizer import get_tokenizer

DOCS = [f"Document number {i}: " + "lorem ipsum dolor sit amet " * (i % 7 + 1) for i in range(60)]
OPTS = {"shard_tokens": 300, "val_tokens": 450, "workers": 1}


def stream(data_dir):
    manifest = read_manifest(data_dir)
    return {
        split: np.concatenate([open_shard(data_dir / s["file"]) for s in manifest["shards"] if s["split"] == split])
        for split in ("val", "train")
    }


def test_shard_sizes_val_split_and_contents(tmp_path):
    manifest = prepare_documents(DOCS, tmp_path, prefix="t", **OPTS)
    sizes = [(s["split"], s["tokens"]) for s in manifest["shards"]]
    total = manifest["total_tokens"]
    # val: exactly 450 tokens as shards of <= 300; train: full 300-token shards and a shorter last one
    assert sizes[:2] == [("val", 300), ("val", 150)]
    assert all(n == 300 for _, n in sizes[2:-1]) and 0 < sizes[-1][1] <= 300
    assert [s["file"] for s in manifest["shards"][:3]] == ["t_val_000000.bin", "t_val_000001.bin", "t_train_000002.bin"]
    tokens = np.concatenate(list(stream(tmp_path).values()))
    assert len(tokens) == total == sum(n for _, n in sizes)
    expected = np.concatenate([[50256] + get_tokenizer().encode(d) for d in DOCS])
    assert np.array_equal(tokens, expected)
    assert manifest["documents"] == 60 and (tokens == 50256).sum() == 60


def test_max_tokens_is_exact_and_empty_docs_are_skipped(tmp_path):
    manifest = prepare_documents(["", *DOCS], tmp_path, max_tokens=500, **OPTS)
    assert manifest["total_tokens"] == 500
    assert [(s["split"], s["tokens"]) for s in manifest["shards"]] == [("val", 300), ("val", 150), ("train", 50)]
    assert open_shard(tmp_path / manifest["shards"][0]["file"])[0] == 50256


def test_shard_size_limits(tmp_path):
    for bad in (0, 2**31):
        with pytest.raises(GPT2Error, match="--shard-tokens must be in"):
            ShardWriter(tmp_path / f"d{bad}", source="x", shard_tokens=bad, val_tokens=0)


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(GPT2Error, match="empty corpus"):
        prepare_documents(["", ""], tmp_path / "d", source="nothing", **OPTS)


def failing(texts, fail_at, exc=RuntimeError):
    for i, text in enumerate(texts):
        if i == fail_at:
            raise exc("simulated crash")
        yield text


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_restart_after_interruption_skips_finished_shards_and_matches_uninterrupted(tmp_path, exc):
    reference = prepare_documents(DOCS, tmp_path / "ref", **OPTS)
    out = tmp_path / "run"
    with pytest.raises(exc):
        prepare_documents(failing(DOCS, 37, exc), out, **OPTS)
    partial = read_manifest(out, require_complete=False)
    assert not partial["complete"] and len(partial["shards"]) >= 3
    assert partial["progress"]["next_token"] > 0  # the cut is inside a document
    assert not list(out.glob(".*"))  # no temp file left over
    finished = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in partial["shards"]}
    (out / ".data_train_000009.bin.abc123.tmp").write_bytes(b"half a shard from a kill -9")
    seen = []

    def recording(texts):
        for text in texts:
            seen.append(text)
            yield text

    manifest = prepare_documents(recording(DOCS), out, **OPTS)
    assert manifest["shards"] == reference["shards"]  # same files, sizes and SHA-256
    assert manifest["documents"] == reference["documents"] and manifest["total_tokens"] == reference["total_tokens"]
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in finished.items())  # not rewritten
    assert not list(out.glob(".*"))  # the killed run's temp file was cleaned up
    # a finished dataset is left alone on a third run
    assert prepare_documents(DOCS, out, **OPTS) == manifest


def test_restart_refuses_other_options_and_foreign_directories(tmp_path):
    with pytest.raises(RuntimeError):
        prepare_documents(failing(DOCS, 30), tmp_path / "d", **OPTS)
    before = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    with pytest.raises(GPT2Error, match="other options"):
        prepare_documents(DOCS, tmp_path / "d", shard_tokens=50, val_tokens=450)
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before  # nothing touched
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(GPT2Error, match="not empty"):
        ShardWriter(tmp_path / "foreign", source="x", shard_tokens=10, val_tokens=0)
