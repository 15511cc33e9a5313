"""``gpt2 prepare fineweb-edu --pretokenized``: download ready-made GPT-2 token shards instead of tokenizing.

The Hub dataset ``kjj0/finewebedu10B-gpt2`` (modded-nanogpt's ``data/cached_finewebedu10B.py``) holds FineWeb-Edu
sample-10BT as llm.c shards of 100M tokens — ``finewebedu_val_000000.bin``, then ``finewebedu_train_000001.bin``
... ``_000099.bin`` — made the way build-nanogpt's ``fineweb.py`` makes its shards (docs/data.md: the val shard).
Our shard format is the same, so the files are used as they are, under their own names, with our manifest.

Every shard is checked before it enters the manifest: header and file size, the SHA-256 the Hub publishes for it
(when the source has one), every id < 50257, and that a sample of its documents re-tokenizes to the same ids
(a shard made with another tokenizer fails). The manifest is rewritten after each shard, so a re-run of the same
command continues after the last checked shard.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.data.manifest import open_dataset, write_manifest
from gpt2.data.shards import file_sha256, open_shard, verify_shard
from gpt2.data.sources import hub_unreachable, one_line
from gpt2.errors import GPT2Error
from gpt2.tokenizer import EOT_ID, get_tokenizer

SAMPLE_DOCUMENTS = 8  # complete documents per shard that must re-tokenize to the same ids
_SAMPLE_TOKENS = 1 << 20  # ... looked for in the shard's first 1M tokens
_SHARD_NAME = re.compile(r"^\w+?_(val|train)_(\d{6})\.bin$")  # finewebedu_val_000000.bin
Fetch = Callable[[str, Path], Path]  # (shard name, staging directory) -> the fetched file


def hub_shards(repo: str) -> tuple[dict[str, str | None], Fetch]:
    """({file name: published SHA-256}, fetch) for the files of the Hub dataset ``repo``."""
    from huggingface_hub import HfApi, hf_hub_download

    try:
        entries = list(HfApi().list_repo_tree(repo, repo_type="dataset"))
    except ConnectionError as exc:  # offline mode, no network (OfflineModeIsEnabled is one too)
        raise hub_unreachable(f"cannot list {repo}", exc) from None
    except Exception as exc:  # not found, gated, rate limited
        raise GPT2Error(f"cannot list {repo} on the Hugging Face Hub: {one_line(exc)}") from None

    def fetch(name: str, staging: Path) -> Path:
        try:
            return Path(hf_hub_download(repo, name, repo_type="dataset", local_dir=staging))
        except Exception as exc:
            raise GPT2Error(
                f"downloading {name} from {repo} failed: {one_line(exc)}; re-run the same command to resume"
            ) from None

    lfs = {entry.path: getattr(entry, "lfs", None) for entry in entries}
    return {name: info.sha256 if info is not None else None for name, info in lfs.items()}, fetch


def local_shards(paths: Sequence[str | Path]) -> tuple[dict[str, str | None], Fetch]:
    """The same for a local copy: directories (their ``.bin`` files) or ``.bin`` files; no published hashes."""
    files: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise GPT2Error(f"input file not found: {path}")
        for file in sorted(path.glob("*.bin")) if path.is_dir() else [path]:
            files[file.name] = file

    def fetch(name: str, staging: Path) -> Path:  # a hard link where possible: no copy of 20 GB
        staging.mkdir(parents=True, exist_ok=True)
        target = staging / name
        target.unlink(missing_ok=True)
        try:
            os.link(files[name], target)
        except OSError:
            shutil.copyfile(files[name], target)
        return target

    return dict.fromkeys(files), fetch


def shard_plan(names: Sequence[str], where: str) -> list[tuple[str, str]]:
    """[(file name, split)] in index order: val shard(s) first, then train, indices 0, 1, 2, ... without gaps."""
    parsed = sorted((int(m.group(2)), m.group(1), name) for name in names if (m := _SHARD_NAME.match(name)))
    if not parsed:
        raise GPT2Error(f"{where} holds no llm.c shards named PREFIX_val_NNNNNN.bin / PREFIX_train_NNNNNN.bin")
    splits = [split for _, split, _ in parsed]
    if [index for index, _, _ in parsed] != list(range(len(parsed))) or splits != sorted(splits, reverse=True):
        raise GPT2Error(
            f"{where}: the shards are not numbered 0, 1, 2, ... with the val shard(s) first "
            f"(found {', '.join(name for _, _, name in parsed[:4])}{' ...' if len(parsed) > 4 else ''})"
        )
    if "train" not in splits or "val" not in splits:
        raise GPT2Error(f"{where} needs both a val and a train shard")
    return [(name, split) for _, split, name in parsed]


def check_retokenizes(path: Path, tokens: np.ndarray, documents: int = SAMPLE_DOCUMENTS) -> None:
    """The first ``documents`` complete documents (between two EOTs) decode and re-encode to the same ids."""
    head = np.asarray(tokens[:_SAMPLE_TOKENS])
    ends = np.flatnonzero(head == EOT_ID)
    if len(ends) < 2:
        raise GPT2Error(f"{path}: no complete document (between two <|endoftext|> tokens) in its first 1M tokens")
    encoding = get_tokenizer().encoding
    for start, end in list(zip(ends[:-1], ends[1:], strict=True))[:documents]:
        ids = head[start + 1 : end].tolist()
        if encoding.encode_ordinary(encoding.decode(ids)) != ids:
            raise GPT2Error(
                f"{path}: the document at token {start} does not re-tokenize to the same ids with the GPT-2 "
                "tokenizer; the shard was made with another tokenizer"
            )


def check_shard(path: Path, published: str | None) -> tuple[int, str, int]:
    """(tokens, SHA-256, documents) of a fetched shard after every check of the module docstring."""
    tokens = open_shard(path)  # header and file size
    sha256 = file_sha256(path)
    if published is not None and sha256 != published:
        raise GPT2Error(f"{path}: SHA-256 {sha256} differs from the published {published}; the download is corrupt")
    verify_shard(path, tokens, None, GPT2_VOCAB_SIZE)  # every id in the vocabulary
    check_retokenizes(path, tokens)
    chunk = 1 << 24
    documents = sum(int(np.count_nonzero(tokens[i : i + chunk] == EOT_ID)) for i in range(0, len(tokens), chunk))
    return len(tokens), sha256, documents


def download_pretokenized(
    out_dir: str | Path, source: str | Sequence[str], max_tokens: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Fetch, check and record the shards of ``source`` (a Hub dataset, or local directories/files in its
    layout) into ``out_dir``; with ``max_tokens``, whole shards in order until at least that many tokens (and one
    train shard)."""
    out_dir = Path(out_dir)
    if isinstance(source, str):
        where, (published, fetch) = source, hub_shards(source)
    else:
        where, (published, fetch) = ", ".join(map(str, source)), local_shards(source)
    local = not isinstance(source, str)
    plan = shard_plan(list(published), where)
    options = {"pretokenized": [str(Path(p).resolve()) for p in source] if local else source, "max_tokens": max_tokens}
    manifest = open_dataset(out_dir, f"fineweb-edu sample-10BT, GPT-2 shards from {where}", options)
    if manifest["complete"]:
        return manifest
    if not progress:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    done = {shard["file"] for shard in manifest["shards"]}
    staging = out_dir / ".download"  # hidden: a killed run leaves no visible half-checked file
    for name, split in plan:
        has_train = any(shard["split"] == "train" for shard in manifest["shards"])
        if max_tokens is not None and manifest["total_tokens"] >= max_tokens and has_train:
            break
        if name in done:
            continue
        fetched = fetch(name, staging)
        try:
            tokens, sha256, documents = check_shard(fetched, published[name])
        except GPT2Error:
            fetched.unlink(missing_ok=True)  # fetched again by the next run
            raise
        os.replace(fetched, out_dir / name)
        manifest["shards"].append({"file": name, "split": split, "tokens": tokens, "sha256": sha256})
        manifest["total_tokens"] += tokens
        manifest["documents"] += documents
        write_manifest(out_dir, manifest)
        if progress:
            print(f"{out_dir / name}: {tokens:,} tokens, checked", file=sys.stderr, flush=True)
    shutil.rmtree(staging, ignore_errors=True)
    manifest["complete"] = True
    write_manifest(out_dir, manifest)
    return manifest
