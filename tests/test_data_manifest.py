"""manifest.json: reading, validation, incomplete datasets, seed shard directories, verification."""

import json

import numpy as np
import pytest

from gpt2.data.manifest import (
    MANIFEST_NAME,
    new_manifest,
    read_manifest,
    split_shards,
    verify_dataset,
    write_manifest,
)
from gpt2.data.prepare import prepare_documents
from gpt2.errors import GPT2Error
from gpt2.tokenizer import TOKENIZER_HASH


def test_prepared_manifest_has_every_documented_field(tmp_path):
    manifest = prepare_documents(["one two three", "four five"], tmp_path / "d", shard_tokens=4, val_tokens=3)
    assert manifest == read_manifest(tmp_path / "d")
    assert manifest["format"] == "gpt2-token-shards" and manifest["version"] == 1
    assert manifest["tokenizer"] == {"name": "gpt2", "hash": TOKENIZER_HASH}
    assert manifest["documents"] == 2 and manifest["complete"] is True
    assert manifest["total_tokens"] == sum(s["tokens"] for s in manifest["shards"]) == 1 + 3 + 1 + 2
    for shard in manifest["shards"]:
        assert set(shard) == {"file", "split", "tokens", "sha256"} and len(shard["sha256"]) == 64
    assert [s["tokens"] for s in split_shards(manifest, "val")] == [3]
    assert [s["tokens"] for s in split_shards(manifest, "train")] == [4]
    assert verify_dataset(tmp_path / "d")["total_tokens"] == 7


def test_missing_invalid_and_incomplete(tmp_path):
    with pytest.raises(GPT2Error, match="not found"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(GPT2Error, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(GPT2Error, match="corrupt dataset manifest .*manifest.json: not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(GPT2Error, match="not a gpt2-token-shards manifest"):
        read_manifest(tmp_path)
    bad = new_manifest("x")
    bad["shards"] = [{"file": "a.bin", "split": "test", "tokens": 1, "sha256": None}]
    write_manifest(tmp_path, bad)
    with pytest.raises(GPT2Error, match="unknown split 'test'"):
        read_manifest(tmp_path, require_complete=False)
    write_manifest(tmp_path, new_manifest("x"))
    with pytest.raises(GPT2Error, match="incomplete.*re-run the same `gpt2 prepare`"):
        read_manifest(tmp_path)
    assert read_manifest(tmp_path, require_complete=False)["complete"] is False


def test_other_tokenizer_is_refused(tmp_path):
    manifest = new_manifest("x")
    manifest["tokenizer"] = {"name": "llama", "hash": "abc"}
    write_manifest(tmp_path, manifest)
    with pytest.raises(GPT2Error, match="different tokenizer"):
        read_manifest(tmp_path, require_complete=False)


def test_seed_shard_directory_without_manifest(tmp_path):
    np.save(tmp_path / "edufineweb_val_000000.npy", np.arange(10, dtype=np.uint16))
    np.save(tmp_path / "edufineweb_train_000001.npy", np.arange(20, dtype=np.uint16))
    np.save(tmp_path / "edufineweb_train_000002.npy", np.arange(30, dtype=np.uint16))
    manifest = read_manifest(tmp_path)
    assert manifest["complete"] and manifest["total_tokens"] == 60
    assert [(s["file"], s["split"], s["tokens"]) for s in manifest["shards"]] == [
        ("edufineweb_train_000001.npy", "train", 20),
        ("edufineweb_train_000002.npy", "train", 30),
        ("edufineweb_val_000000.npy", "val", 10),
    ]


def test_verify_detects_changed_shard(tmp_path):
    manifest = prepare_documents(["alpha beta gamma delta"] * 3, tmp_path, shard_tokens=5, val_tokens=0)
    shard = tmp_path / manifest["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(GPT2Error, match=f"{shard.name}: SHA-256 differs"):
        verify_dataset(tmp_path)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "sub/shard.bin", "..", "", "a\\b.bin", 7])
def test_shard_names_stay_inside_the_dataset_directory(tmp_path, name):
    """Issue 28.17: a manifest names its shards, never a path out of (or into a subdirectory of) the dataset."""
    bad = new_manifest("x")
    bad["shards"] = [{"file": name, "split": "train", "tokens": 1, "sha256": None}]
    write_manifest(tmp_path, bad)
    with pytest.raises(GPT2Error, match="shard entry 0: 'file' must name a file in the dataset directory, not a path"):
        read_manifest(tmp_path, require_complete=False)
