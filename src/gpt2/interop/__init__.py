"""Import weights from Hugging Face / nanoGPT, export to Hugging Face.

    gpt2 import hf SRC --out DIR           # SRC: local HF GPT-2 directory or hub name (gpt2, gpt2-xl, ...)
    gpt2 import nanogpt FILE.pt --out DIR  # seed / build-nanogpt / nanoGPT checkpoint, read without running pickles
    gpt2 export CKPT --format hf --out HFDIR

Imports write our checkpoint format (safetensors + JSON); the export directory loads with
``transformers.GPT2LMHeadModel.from_pretrained`` and ``AutoTokenizer.from_pretrained`` offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gpt2.checkpoint import latest_checkpoint, load_checkpoint, save_model
from gpt2.errors import GPT2Error
from gpt2.interop.hf import export_hf, load_hf_model
from gpt2.interop.nanogpt import import_nanogpt, load_nanogpt_checkpoint
from gpt2.model import GPT

__all__ = ["export_hf", "import_nanogpt", "load_hf_model", "load_nanogpt_checkpoint"]

EXPORT_FORMATS = ("hf",)


def _check_output(out: Path, force: bool) -> None:
    """Refuse to replace a non-empty directory (or any file) at ``out`` unless ``--force``: never lose data silently."""
    if out.is_file():
        raise GPT2Error(f"--out {out} is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise GPT2Error(f"--out {out} already exists and is not empty; pass --force to replace it")


def _summary(model: GPT) -> str:
    cfg = model.config
    return (
        f"{model.num_parameters():,} parameters, n_layer={cfg.n_layer} n_head={cfg.n_head} n_embd={cfg.n_embd} "
        f"block_size={cfg.block_size} vocab_size={cfg.vocab_size}"
    )


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source_type", choices=("hf", "nanogpt"), help="hf: Hugging Face GPT-2; nanogpt: a .pt file")
    parser.add_argument("src", help="HF model directory or hub name (hf), or a .pt checkpoint file (nanogpt)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it already exists")


def run_import(args: argparse.Namespace) -> int:
    _check_output(args.out, args.force)
    meta: dict[str, Any]
    if args.source_type == "hf":
        model = load_hf_model(args.src)
        meta = {"source": args.src, "imported_from": "hf"}
    else:
        model, meta = import_nanogpt(args.src)
    save_model(args.out, model, meta)
    print(f"imported {args.src} -> {args.out} ({_summary(model)})")
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint directory or run directory (its latest checkpoint)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="hf", help="output format (default: hf)")
    parser.add_argument("--out", required=True, type=Path, help="directory to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it already exists")


def run_export(args: argparse.Namespace) -> int:
    _check_output(args.out, args.force)
    # Our format only (interop sits below gpt2.loading, which imports it): a checkpoint or a run's latest one.
    model = load_checkpoint(latest_checkpoint(args.model) or args.model)
    export_hf(model, args.out)
    print(f"exported {args.model} -> {args.out} (Hugging Face GPT2LMHeadModel; {_summary(model)})")
    return 0
