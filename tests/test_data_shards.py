"""llm.c shard format: exact header layout, round trip, .npy shards, and every corruption → GPT2Error."""

import struct

import numpy as np
import pytest

from gpt2.data.shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    encode_header,
    file_sha256,
    open_shard,
    read_bin_header,
    shard_num_tokens,
    write_shard,
)
from gpt2.errors import GPT2Error
from gpt2.store.files import atomic_write_bytes


def test_round_trip_and_llmc_header_layout(tmp_path):
    tokens = np.array([50256, 0, 1, 65535, 31373, 995], dtype=np.int64)
    path = tmp_path / "x_train_000001.bin"
    sha = write_shard(path, tokens)
    raw = path.read_bytes()
    # llm.c: 256 little-endian int32, [0]=20240520, [1]=1, [2]=ntok, rest zero; then uint16 tokens
    header = struct.unpack("<256i", raw[:1024])
    assert header[:3] == (20240520, 1, 6) and set(header[3:]) == {0}
    assert struct.unpack("<6H", raw[1024:]) == tuple(tokens.tolist())
    assert len(raw) == 1024 + 2 * 6
    assert sha == file_sha256(path)
    loaded = open_shard(path)
    assert loaded.dtype == np.uint16 and loaded.tolist() == tokens.tolist()
    assert read_bin_header(path) == 6 == shard_num_tokens(path)
    assert not list(tmp_path.glob(".*.tmp"))  # temp file renamed away


def test_empty_shard_and_out_of_range_tokens(tmp_path):
    write_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16))
    assert open_shard(tmp_path / "e.bin").shape == (0,)
    with pytest.raises(GPT2Error, match="uint16"):
        write_shard(tmp_path / "bad.bin", np.array([70000]))
    assert not (tmp_path / "bad.bin").exists()


def test_reads_build_nanogpt_npy_shard(tmp_path):
    tokens = np.array([50256, 464, 2068, 7586], dtype=np.uint16)
    np.save(tmp_path / "edufineweb_val_000000.npy", tokens)  # exactly what the seed's fineweb.py writes
    assert open_shard(tmp_path / "edufineweb_val_000000.npy").tolist() == tokens.tolist()


def test_npy_with_objects_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(GPT2Error, match="evil.npy"):
        open_shard(tmp_path / "evil.npy")


def _bin_with_header(path, magic=SHARD_MAGIC, version=1, ntok=4, actual=4):
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, ntok
    path.write_bytes(header.tobytes() + np.arange(actual, dtype="<u2").tobytes())
    return path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"magic": 12345}, "bad magic number 12345"),
        ({"version": 7}, "unsupported shard version 7"),
        ({"ntok": 10, "actual": 4}, "disagrees with its header"),
        ({"ntok": 2, "actual": 4}, "disagrees with its header"),
    ],
)
def test_corrupt_bin_is_rejected_naming_the_file(tmp_path, kwargs, message):
    path = _bin_with_header(tmp_path / "broken.bin", **kwargs)
    with pytest.raises(GPT2Error, match=message) as info:
        open_shard(path)
    assert "broken.bin" in str(info.value)


def test_short_missing_and_unknown_files(tmp_path):
    (tmp_path / "short.bin").write_bytes(encode_header(3)[:100])
    with pytest.raises(GPT2Error, match="too short"):
        read_bin_header(tmp_path / "short.bin")
    with pytest.raises(GPT2Error, match="not found"):
        open_shard(tmp_path / "missing.bin")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(GPT2Error, match="unknown shard extension"):
        open_shard(tmp_path / "a.txt")
    assert len(encode_header(3)) == HEADER_BYTES


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def chunks():
        yield b"new partial"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, chunks())
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind
