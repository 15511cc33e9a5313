"""Token shards on disk: the llm.c ``.bin`` format (read + write) and build-nanogpt ``.npy`` (read).

An llm.c shard is a 1024-byte header of 256 little-endian int32 — ``[0]`` = magic 20240520,
``[1]`` = version 1, ``[2]`` = number of tokens — followed by that many uint16 token ids. Using
the exact format means our shards load in llm.c / modded-nanogpt and theirs load here.
build-nanogpt's ``fineweb.py`` writes plain ``np.save`` uint16 arrays (``.npy``); those are read
with ``allow_pickle=False`` so a hostile file cannot run code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from gpt2.errors import GPT2Error
from gpt2.store.files import atomic_write_bytes

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_SHARD_TOKENS = 2**31 - 1  # the token count is an int32 header field
TOKEN_DTYPE = np.dtype("<u2")  # GPT-2 ids < 50257 fit in uint16
SHARD_SUFFIXES = (".bin", ".npy")


def encode_header(num_tokens: int) -> bytes:
    """The 1024-byte llm.c header for a shard of ``num_tokens`` tokens."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, num_tokens
    return header.tobytes()


def write_shard(path: str | Path, tokens: np.ndarray) -> str:
    """Write ``tokens`` (1-D, values < 65536) as an llm.c shard; returns the file's SHA-256 (hex).

    Written with ``atomic_write_bytes`` (temp + fsync + rename): never a truncated shard under ``path``.
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(np.uint16).max):
        raise GPT2Error(f"token ids out of uint16 range while writing {path}")
    data = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
    header, body = encode_header(len(data)), memoryview(data).cast("B")  # type: ignore[arg-type]  # no copy; numpy arrays are buffers
    atomic_write_bytes(path, (header, body))
    digest = hashlib.sha256(header)
    digest.update(body)
    return digest.hexdigest()


def read_bin_header(path: str | Path) -> int:
    """Validate an llm.c shard's header and file size; returns its token count.

    Raises GPT2Error naming the file for a wrong magic, a wrong version or a size that disagrees
    with the header (e.g. a truncated download).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise GPT2Error(f"shard file not found: {path}") from None
    if len(raw) < HEADER_BYTES:
        raise GPT2Error(f"{path}: too short for an llm.c shard header ({len(raw)} < {HEADER_BYTES} bytes)")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != SHARD_MAGIC:
        raise GPT2Error(f"{path}: bad magic number {int(header[0])} (expected {SHARD_MAGIC}); not an llm.c token shard")
    if header[1] != SHARD_VERSION:
        raise GPT2Error(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    num_tokens = int(header[2])
    expected = HEADER_BYTES + 2 * num_tokens
    actual = path.stat().st_size
    if num_tokens < 0 or actual != expected:
        raise GPT2Error(
            f"{path}: file size {actual} bytes disagrees with its header ({num_tokens} tokens = {expected} bytes); "
            "the shard is truncated or corrupt"
        )
    return num_tokens


def open_shard(path: str | Path) -> np.ndarray:
    """Memory-map a shard's tokens as a read-only 1-D uint16 array (``.bin`` or build-nanogpt ``.npy``)."""
    path = Path(path)
    if path.suffix == ".bin":
        num_tokens = read_bin_header(path)
        if num_tokens == 0:
            return np.zeros(0, dtype=TOKEN_DTYPE)
        return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(num_tokens,))
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise GPT2Error(f"shard file not found: {path}") from None
        except ValueError as exc:
            raise GPT2Error(f"{path}: not a valid .npy token shard ({exc})") from None
        if array.ndim != 1 or array.dtype.kind not in "ui" or array.dtype.itemsize > 4:
            raise GPT2Error(f"{path}: expected a 1-D integer token array, got {array.dtype} {array.shape}")
        return array
    raise GPT2Error(f"{path}: unknown shard extension {path.suffix!r} (expected .bin or .npy)")


def shard_num_tokens(path: str | Path) -> int:
    """Token count of a shard without reading its tokens (validates the header)."""
    return int(open_shard(path).shape[0])


# Shards already verified in this process: (resolved path, size, mtime_ns). The val split is reopened at every
# in-loop evaluation; an unchanged file is not hashed again.
_VERIFIED: set[tuple[str, int, int]] = set()
_CHECK_CHUNK = 1 << 24  # tokens per vectorised range check (32 MB of uint16)


def verify_shard(path: str | Path, tokens: np.ndarray, sha256: str | None, vocab_size: int) -> None:
    """Check a shard before its tokens are used: its SHA-256 (when the manifest has one) and every id < ``vocab_size``.

    Raises GPT2Error naming the file (and, for a bad id, its offset in tokens). ``tokens`` is the shard's
    memory map (:func:`open_shard`). Costs one read of the file (~1 s per 100M-token shard).
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    if sha256 is not None and file_sha256(path) != sha256:
        raise GPT2Error(
            f"{path}: SHA-256 differs from the dataset's manifest.json; the shard is corrupt, re-run `gpt2 prepare`"
        )
    for start in range(0, len(tokens), _CHECK_CHUNK):
        chunk = np.asarray(tokens[start : start + _CHECK_CHUNK])
        if chunk.size and int(chunk.max()) >= vocab_size:
            offset = start + int(np.argmax(chunk >= vocab_size))
            raise GPT2Error(
                f"{path}: token id {int(tokens[offset])} at offset {offset} is outside the vocabulary "
                f"(ids must be < {vocab_size}); the shard is corrupt or from another tokenizer"
            )
    _VERIFIED.add(key)


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 24) -> str:
    """SHA-256 (hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
