"""The Hugging Face sources of `gpt2 prepare`, offline on local stand-ins in the Hub's layouts: `prepare hf`
(a dataset directory read through `datasets`, kill -9 + resume) and `prepare fineweb-edu --pretokenized`
(a directory of llm.c shards laid out as kjj0/finewebedu10B-gpt2)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt2.data.encode import encode_document
from gpt2.data.loader import TokenShardLoader
from gpt2.data.manifest import read_manifest
from gpt2.data.pretokenized import check_shard, shard_plan
from gpt2.data.shards import file_sha256, open_shard, write_shard
from gpt2.errors import GPT2Error
from gpt2.tokenizer import EOT_ID, get_tokenizer
from test_data_prepare import prepare, snapshot
from test_data_sources import hub_layout
from train_helpers import subprocess_env, synthetic_texts

OPTIONS = ["--shard-tokens", "2000", "--val-tokens", "1500", "--workers", "1"]


@pytest.fixture
def dataset_dir(tmp_path):
    """~30k tokens of text as data/train-0000i-of-00003.parquet (+ a validation file), as on the Hub."""
    texts = synthetic_texts(240)
    return hub_layout(tmp_path / "ds", {"train": [texts[:80], texts[80:160], texts[160:]], "validation": [["v"]]})


def test_prepare_hf_on_a_local_dataset(dataset_dir, tmp_path, capsys, offline_hub):
    code, out, err = prepare(capsys, "hf", dataset_dir, "--out", tmp_path / "d", *OPTIONS)
    assert code == 0 and err == [], err
    manifest = read_manifest(tmp_path / "d")
    assert manifest["documents"] == 240 and manifest["source"] == str(dataset_dir)
    assert manifest["options"]["dataset"] == str(dataset_dir) and manifest["options"]["split"] == "train"
    assert manifest["shards"][0]["file"] == "ds_val_000000.bin" and manifest["shards"][0]["tokens"] == 1500
    stream = np.concatenate([open_shard(tmp_path / "d" / s["file"]) for s in manifest["shards"]])
    assert np.array_equal(stream, np.concatenate([encode_document(t) for t in synthetic_texts(240)]))
    # --no-streaming downloads (here: caches) the dataset first: the same shards
    code, _, _ = prepare(capsys, "hf", dataset_dir, "--out", tmp_path / "d2", "--no-streaming", *OPTIONS)
    assert code == 0 and snapshot(tmp_path / "d2").keys() == snapshot(tmp_path / "d").keys()
    assert read_manifest(tmp_path / "d2")["shards"] == manifest["shards"]


def test_prepare_hf_presets_name_their_dataset(tmp_path, capsys, offline_hub):
    for preset, dataset in [("tinystories", "roneneldan/TinyStories"), ("fineweb", "HuggingFaceFW/fineweb")]:
        code, _, err = prepare(capsys, "hf", preset, "--out", tmp_path / preset)
        config = " (config 'sample-10BT', split 'train')" if preset == "fineweb" else " (split 'train')"
        assert code == 1 and err == [
            f"error: cannot open dataset '{dataset}'{config}: the Hugging Face Hub is unreachable (HF_HUB_OFFLINE is "
            "set); use a local copy (docs/data.md)"
        ]
        assert not (tmp_path / preset).exists()


# The documents of a `gpt2 prepare` process stop coming after the first 150 (of 240): it is provably still running,
# with shards on disk, when it is killed. Only the source is patched; the writer and its resume are the real ones.
BLOCKING_PREPARE = """
import sys, time
from gpt2.data import sources
from gpt2.cli import main
read = sources._dataset_texts
def blocking(*args):
    for number, text in enumerate(read(*args)):
        if number == 150:
            time.sleep(3600)
        yield text
sources._dataset_texts = blocking
sys.exit(main(sys.argv[1:]))
"""


def test_prepare_hf_kill_9_then_rerun_gives_identical_shards(dataset_dir, tmp_path, capsys, offline_hub):
    assert prepare(capsys, "hf", dataset_dir, "--out", tmp_path / "ref", *OPTIONS)[0] == 0
    out = tmp_path / "killed"
    command = ["prepare", "hf", str(dataset_dir), "--out", str(out), *OPTIONS, "--quiet"]
    env = {**subprocess_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen([sys.executable, "-c", BLOCKING_PREPARE, *command], env=env)
    try:
        deadline = time.monotonic() + 120
        manifest = out / "manifest.json"
        while not (manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 3):
            assert process.poll() is None and time.monotonic() < deadline, "no shards written"
            time.sleep(0.05)
        time.sleep(0.5)  # blocked by now (150 documents fill only a few shards): nothing more is written
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    partial = read_manifest(out, require_complete=False)
    assert process.returncode == -signal.SIGKILL and not partial["complete"]
    assert 0 < partial["progress"]["next_document"] <= 150
    assert prepare(capsys, "hf", dataset_dir, "--out", out, *OPTIONS)[0] == 0  # the same command resumes
    assert snapshot(out).keys() == snapshot(tmp_path / "ref").keys()
    assert read_manifest(out) == read_manifest(tmp_path / "ref")
    assert {k: v for k, v in snapshot(out).items() if k != "manifest.json"} == {
        k: v for k, v in snapshot(tmp_path / "ref").items() if k != "manifest.json"
    }


# ---------------------------------------------------------------- --pretokenized


def published_layout(root, documents=90, shards=3, prefix="finewebedu"):
    """Shards as kjj0/finewebedu10B-gpt2 lays them out: PREFIX_val_000000.bin, PREFIX_train_000001.bin, ...
    cut from one token stream at fixed sizes (documents straddle shards). Returns the stream."""
    stream = np.concatenate([encode_document(text) for text in synthetic_texts(documents, seed=3)])
    root.mkdir(parents=True)
    size = -(-len(stream) // shards)
    for i in range(shards):
        write_shard(root / f"{prefix}_{'val' if i == 0 else 'train'}_{i:06d}.bin", stream[i * size : (i + 1) * size])
    return stream


def test_pretokenized_from_a_local_copy(tmp_path, capsys):
    stream = published_layout(tmp_path / "hub")
    code, out, err = prepare(capsys, "fineweb-edu", "--pretokenized", "--data-files", tmp_path / "hub", "--out",
                             tmp_path / "d")  # fmt: skip
    assert code == 0 and err == [], err
    manifest = read_manifest(tmp_path / "d")
    names = ["finewebedu_val_000000.bin", "finewebedu_train_000001.bin", "finewebedu_train_000002.bin"]
    assert [(s["file"], s["split"]) for s in manifest["shards"]] == list(
        zip(names, ["val", "train", "train"], strict=True)
    )
    for shard in manifest["shards"]:  # the files as published, byte for byte, with our hashes
        assert (tmp_path / "d" / shard["file"]).read_bytes() == (tmp_path / "hub" / shard["file"]).read_bytes()
        assert shard["sha256"] == file_sha256(tmp_path / "hub" / shard["file"])
    assert manifest["total_tokens"] == len(stream) and manifest["documents"] == 90 == (stream == EOT_ID).sum()
    assert f"{len(stream):,} tokens" in out and not (tmp_path / "d" / ".download").exists()
    assert prepare(capsys, "--verify", tmp_path / "d")[0] == 0
    x, _ = TokenShardLoader(tmp_path / "d", "val", batch_size=1, seq_len=8).next_batch()
    assert x[0].tolist() == stream[:8].tolist()
    # --max-tokens takes whole shards, in order, until it is reached
    code, _, _ = prepare(capsys, "fineweb-edu", "--pretokenized", "--data-files", tmp_path / "hub", "--out",
                         tmp_path / "part", "--max-tokens", "1")  # fmt: skip
    assert code == 0 and [s["file"] for s in read_manifest(tmp_path / "part")["shards"]] == names[:2]


def test_pretokenized_bad_shard_stops_and_the_fixed_rerun_resumes(tmp_path, capsys):
    published_layout(tmp_path / "hub", shards=4)
    bad = tmp_path / "hub" / "finewebedu_train_000002.bin"
    good = bad.read_bytes()
    bad.write_bytes(good[:-2])  # truncated download
    args = ["fineweb-edu", "--pretokenized", "--data-files", tmp_path / "hub", "--out", tmp_path / "d"]
    code, _, err = prepare(capsys, *args)
    assert code == 1 and len(err) == 1 and "finewebedu_train_000002.bin: file size" in err[0]
    partial = read_manifest(tmp_path / "d", require_complete=False)
    assert [s["file"] for s in partial["shards"]] == ["finewebedu_val_000000.bin", "finewebedu_train_000001.bin"]
    kept = (tmp_path / "d" / "finewebedu_val_000000.bin").stat().st_ino
    bad.write_bytes(good)
    assert prepare(capsys, *args)[0] == 0
    assert len(read_manifest(tmp_path / "d")["shards"]) == 4
    assert (tmp_path / "d" / "finewebedu_val_000000.bin").stat().st_ino == kept  # not fetched again


def rewrite_tokens(path, edit):
    tokens = np.array(open_shard(path))
    edit(tokens)
    write_shard(path, tokens)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.__setitem__(5, 50300), "token id 50300 at offset 5 is outside the vocabulary"),
        # another tokenizer: every id but EOT shifted by one (all still < 50257)
        (lambda t: t.__setitem__(t != EOT_ID, (t[t != EOT_ID] + 1) % EOT_ID), "does not re-tokenize to the same ids"),
        (lambda t: t.__setitem__(slice(None), 7), "no complete document"),
    ],
)
def test_check_shard_rejects(tmp_path, edit, message):
    published_layout(tmp_path / "hub")
    shard = tmp_path / "hub" / "finewebedu_train_000001.bin"
    assert check_shard(shard, file_sha256(shard))[0] > 0
    rewrite_tokens(shard, edit)
    with pytest.raises(GPT2Error, match=message):
        check_shard(shard, None)


def test_check_shard_compares_the_published_hash(tmp_path):
    published_layout(tmp_path / "hub")
    shard = tmp_path / "hub" / "finewebedu_val_000000.bin"
    with pytest.raises(GPT2Error, match=f"SHA-256 {file_sha256(shard)} differs from the published 00"):
        check_shard(shard, "00" * 32)


def test_retokenize_check_uses_gpt2s_own_encoding(tmp_path):
    """The reference: a document's ids are exactly tiktoken's encode_ordinary of its text."""
    text = synthetic_texts(1, seed=9)[0]
    assert encode_document(text)[1:].tolist() == get_tokenizer().encoding.encode_ordinary(text)


def test_shard_plan_checks_the_layout():
    names = ["x_train_000002.bin", "x_val_000000.bin", "x_train_000001.bin", "README.md", ".gitattributes"]
    assert shard_plan(names, "here") == [("x_val_000000.bin", "val"), ("x_train_000001.bin", "train"),
                                         ("x_train_000002.bin", "train")]  # fmt: skip
    for bad, message in [
        (["x_val_000000.bin", "x_train_000002.bin"], "not numbered 0, 1, 2"),
        (["x_train_000000.bin", "x_val_000001.bin"], "val shard\\(s\\) first"),
        (["x_val_000000.bin"], "needs both a val and a train shard"),
        (["README.md"], "holds no llm.c shards"),
    ]:
        with pytest.raises(GPT2Error, match=message):
            shard_plan(bad, "here")


def test_pretokenized_hub_unreachable_is_one_line(tmp_path, capsys, offline_hub):
    code, _, err = prepare(capsys, "fineweb-edu", "--pretokenized", "--out", tmp_path / "d")
    assert code == 1 and err == [
        "error: cannot list kjj0/finewebedu10B-gpt2: the Hugging Face Hub is unreachable (HF_HUB_OFFLINE is set); "
        "use a local copy (docs/data.md)"
    ]
    assert not (tmp_path / "d").exists()
