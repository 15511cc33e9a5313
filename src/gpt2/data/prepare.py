"""Tokenize documents into llm.c shards + ``manifest.json`` (resumable); the ``gpt2 prepare`` command is
:mod:`gpt2.data.cli`.

``prepare_documents(texts, out_dir, ...)`` does it for any iterable of strings.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from gpt2.data.encode import encode_documents
from gpt2.data.writer import ShardWriter
from gpt2.errors import GPT2Error

DEFAULT_SHARD_TOKENS = 100_000_000  # as build-nanogpt's fineweb.py


def _progress_bar(enabled: bool, total: int | None, initial: int):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="tok",
        unit_scale=True,
        dynamic_ncols=True,
        disable=not enabled,
        file=sys.stderr,
    )


def prepare_documents(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    source: str = "documents",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    val_tokens: int | None = None,
    val_shards: int | None = None,
    workers: int | None = None,
    max_tokens: int | None = None,
    prefix: str = "data",
    progress: bool = False,
    options: dict[str, Any] | None = None,
    val_fraction: float | None = None,
) -> dict[str, Any]:
    """Tokenize ``texts`` (one document each, in order) into a dataset directory; returns its manifest.

    Each document becomes ``[EOT] + tokens``. The first ``val_tokens`` tokens (default: ``val_shards``
    shards of ``shard_tokens``, default 1 shard, as build-nanogpt) form the val split, the rest is train.
    A corpus smaller than 2 x ``val_tokens`` gets a val split of ``val_fraction`` of its tokens instead,
    or with ``val_fraction`` None, if it is not larger than ``val_tokens``, a GPT2Error (and no files).
    Output is identical for any ``workers``. If ``out_dir`` holds an interrupted run with the same
    ``source`` / options, the documents before its cursor are skipped (not re-encoded) and writing
    continues after the last finished shard; a finished one is returned as is.
    """
    if val_tokens is not None and val_shards is not None:
        raise GPT2Error("give either --val-tokens or --val-shards, not both")
    if val_tokens is None:
        val_tokens = (1 if val_shards is None else val_shards) * shard_tokens
    writer = ShardWriter(
        out_dir,
        source=source,
        shard_tokens=shard_tokens,
        val_tokens=val_tokens,
        prefix=prefix,
        max_tokens=max_tokens,
        options=options,
        val_fraction=val_fraction,
    )
    if writer.complete:
        return writer.manifest
    start_doc, _ = writer.resume_point
    items = (item for item in islice(enumerate(texts), start_doc, None) if item[1])  # skip empty documents
    bar = _progress_bar(progress, max_tokens, writer.total_tokens)
    t0, docs = time.perf_counter(), 0
    try:
        for index, tokens in encode_documents(items, workers=workers):
            before = writer.total_tokens
            writer.add_document(index, tokens)
            docs += 1
            bar.update(writer.total_tokens - before)
            if docs % 256 == 0:
                bar.set_postfix(docs=writer.documents, docs_per_s=f"{docs / (time.perf_counter() - t0):.0f}")
            if writer.done:
                break
        return writer.finish()
    finally:  # also on an error or Ctrl-C: the shard being written is completed, so a re-run resumes after it
        bar.close()
        writer.close()
