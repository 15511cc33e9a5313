"""``manifest.json``: what a prepared dataset directory contains and whether it is finished.

Layout (all keys always present in what we write)::

    {"format": "gpt2-token-shards", "version": 1,
     "source": "fineweb-edu sample-10BT",            # human-readable description
     "tokenizer": {"name": "gpt2", "hash": TOKENIZER_HASH},
     "documents": 123, "total_tokens": 456,
     "shards": [{"file": "edufineweb_val_000000.bin", "split": "val", "tokens": 100, "sha256": "..."}],
     "complete": true,
     "options": {...}, "progress": {...}}           # used by ``gpt2 prepare`` to resume

A directory without a manifest that holds build-nanogpt / llm.c shards (``*_train_*.npy``,
``*_val_*.bin``, ...) is still readable: ``read_manifest`` describes it on the fly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gpt2.data.shards import SHARD_SUFFIXES, file_sha256, read_bin_header, shard_num_tokens
from gpt2.errors import GPT2Error
from gpt2.store.files import read_json, write_json_atomic
from gpt2.tokenizer import TOKENIZER_HASH

MANIFEST_NAME = "manifest.json"
# The "format" / "version" markers of a manifest: what a prepared dataset is, unlike our checkpoints'
# gpt2.store.checkpoint.CHECKPOINT_FORMAT. The values on disk never change, so old datasets keep loading.
SHARDS_FORMAT = "gpt2-token-shards"
SHARDS_FORMAT_VERSION = 1
SPLITS = ("train", "val")
_SHARD_KEYS = ("file", "split", "tokens", "sha256")
# build-nanogpt: edufineweb_train_000001.npy; llm.c: fineweb_val_000000.bin
_SPLIT_IN_NAME = re.compile(r"(?:^|[_\-.])(train|val)(?:[_\-.]|$)")


def new_manifest(source: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """An empty, incomplete manifest for a dataset about to be prepared from ``source``."""
    return {
        "format": SHARDS_FORMAT,
        "version": SHARDS_FORMAT_VERSION,
        "source": source,
        "tokenizer": {"name": "gpt2", "hash": TOKENIZER_HASH},
        "documents": 0,
        "total_tokens": 0,
        "shards": [],
        "complete": False,
        "options": dict(options or {}),
        "progress": {},
    }


def write_manifest(data_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Atomically (temp + fsync + rename) write ``manifest`` to ``data_dir/manifest.json``."""
    write_json_atomic(Path(data_dir) / MANIFEST_NAME, manifest)


def open_dataset(out_dir: Path, source: str, options: dict[str, Any]) -> dict[str, Any]:
    """The manifest to continue writing ``out_dir`` with: a new one (nothing is created yet), or that of an
    interrupted or finished run of the same ``source`` and ``options``, whose shards' headers are checked.

    Refuses (GPT2Error) a non-empty directory without a manifest and a dataset of another source or options;
    removes the temp files of a run killed mid-write.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise GPT2Error(f"--out {out_dir} exists and is not a directory")
    if not (out_dir / MANIFEST_NAME).is_file():
        visible = [p for p in out_dir.iterdir() if not p.name.startswith(".")] if out_dir.is_dir() else []
        if visible:
            raise GPT2Error(
                f"--out {out_dir} is not empty and has no {MANIFEST_NAME}; refusing to write into it "
                "(choose a new directory)"
            )
        return new_manifest(source, options)
    manifest = read_manifest(out_dir, require_complete=False)
    for stale in out_dir.glob(".*.tmp"):  # temp files of a run that was killed mid-write
        stale.unlink(missing_ok=True)
    if manifest.get("options") != options or manifest.get("source") != source:
        raise GPT2Error(
            f"--out {out_dir} already holds a dataset prepared from {manifest.get('source')!r} with other "
            "options; choose a new directory or delete it (nothing was changed)"
        )
    for shard in manifest["shards"]:  # a resumed run builds on these: make sure they are intact
        if read_bin_header(out_dir / shard["file"]) != shard["tokens"]:
            raise GPT2Error(f"{out_dir / shard['file']}: token count disagrees with {MANIFEST_NAME}")
    return manifest


def _validate(manifest: Any, path: Path) -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise GPT2Error(f"{path}: expected a JSON object")
    if manifest.get("format") != SHARDS_FORMAT:
        raise GPT2Error(f"{path}: not a {SHARDS_FORMAT} manifest (format={manifest.get('format')!r})")
    if manifest.get("version") != SHARDS_FORMAT_VERSION:
        raise GPT2Error(
            f"{path}: unsupported manifest version {manifest.get('version')!r} (expected {SHARDS_FORMAT_VERSION})"
        )
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise GPT2Error(f"{path}: 'shards' must be a list")
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict) or any(key not in shard for key in _SHARD_KEYS):
            raise GPT2Error(f"{path}: shard entry {i} must have the keys {', '.join(_SHARD_KEYS)}")
        name = shard["file"]
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            raise GPT2Error(f"{path}: shard entry {i}: 'file' must name a file in the dataset directory, not a path")
        if shard["split"] not in SPLITS:
            raise GPT2Error(f"{path}: shard {shard['file']!r} has unknown split {shard['split']!r}")
    tokenizer = manifest.get("tokenizer") or {}
    if tokenizer.get("hash") not in (None, TOKENIZER_HASH):
        raise GPT2Error(f"{path}: dataset was tokenized with a different tokenizer ({tokenizer.get('name')!r})")
    return manifest


def discover_shards(data_dir: Path) -> dict[str, Any] | None:
    """Describe a manifest-less directory of build-nanogpt (``.npy``) or llm.c (``.bin``) shards; None if none.

    The split is taken from the file name (``..._train_...`` / ``..._val_...``); files are sorted by name.
    """
    shards: list[dict[str, Any]] = []
    for path in sorted(p for p in data_dir.iterdir() if p.suffix in SHARD_SUFFIXES and not p.name.startswith(".")):
        match = _SPLIT_IN_NAME.search(path.stem)
        if match:
            shards.append(
                {"file": path.name, "split": match.group(1), "tokens": shard_num_tokens(path), "sha256": None}
            )
    if not shards:
        return None
    manifest = new_manifest(f"shards found in {data_dir} (no manifest.json)")
    manifest.update(
        shards=shards, total_tokens=sum(s["tokens"] for s in shards), documents=None, complete=True, discovered=True
    )
    manifest["tokenizer"] = {"name": "gpt2", "hash": None}
    return manifest


def read_manifest(data_dir: str | Path, require_complete: bool = True) -> dict[str, Any]:
    """The manifest of the prepared dataset in ``data_dir``.

    Raises GPT2Error when the directory or manifest is missing or invalid, or (``require_complete``)
    when ``gpt2 prepare`` has not finished writing it.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise GPT2Error(f"dataset directory not found: {data_dir} (create it with `gpt2 prepare ... --out {data_dir}`)")
    path = data_dir / MANIFEST_NAME
    if not path.is_file():
        discovered = discover_shards(data_dir)
        if discovered is not None:
            return discovered
        raise GPT2Error(
            f"{data_dir} has no {MANIFEST_NAME} and no shards; create it with `gpt2 prepare ... --out {data_dir}`"
        )
    manifest = _validate(read_json(path, "dataset manifest"), path)
    if require_complete and not manifest.get("complete"):
        raise GPT2Error(
            f"{data_dir} is incomplete (its prepare was interrupted after {len(manifest['shards'])} shard(s)); "
            "re-run the same `gpt2 prepare` command to finish it"
        )
    return manifest


def split_shards(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The shard entries of ``split`` in dataset order."""
    if split not in SPLITS:
        raise GPT2Error(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    return [shard for shard in manifest["shards"] if shard["split"] == split]


def verify_dataset(data_dir: str | Path) -> dict[str, Any]:
    """Check every shard of a finished dataset against its manifest (header, size, token count, SHA-256).

    Returns the manifest; raises GPT2Error naming the first bad file.
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    for shard in manifest["shards"]:
        path = data_dir / shard["file"]
        tokens = shard_num_tokens(path)
        if tokens != shard["tokens"]:
            raise GPT2Error(f"{path}: holds {tokens} tokens but {MANIFEST_NAME} says {shard['tokens']}")
        if shard["sha256"] is not None and file_sha256(path) != shard["sha256"]:
            raise GPT2Error(f"{path}: SHA-256 differs from {MANIFEST_NAME}; the shard is corrupt, re-run prepare")
    return manifest
