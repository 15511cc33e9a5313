"""``gpt2 import`` / ``gpt2 export``: Hugging Face and nanoGPT weights in, Hugging Face and GGUF out.

    gpt2 import hf SRC --out DIR           # SRC: local HF GPT-2 directory or hub name (gpt2, gpt2-xl, ...)
    gpt2 import nanogpt FILE.pt --out DIR  # seed / build-nanogpt / nanoGPT checkpoint, read without running pickles
    gpt2 export CKPT --format hf --out HFDIR
    gpt2 export CKPT --format gguf --out model.gguf [--quant f32|f16|q8_0]   # for llama.cpp, Ollama, LM Studio

Light at import: torch, transformers, gguf and the converters load only in ``run_import`` / ``run_export``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt2.errors import GPT2Error

if TYPE_CHECKING:
    from gpt2.model import GPT

EXPORT_FORMATS = ("hf", "gguf")


def _check_output(out: Path, force: bool, source: str, file: bool = False) -> None:
    """Refuse to replace a non-empty directory (or, with ``file``, a file) at ``out`` unless ``--force``: never lose
    data silently. ``out`` must be a directory path, or a file path when ``file`` (a GGUF file).

    ``--force`` replaces only a directory this project wrote (a checkpoint, or an export by ``gpt2 export``),
    never anything else. Even then ``out`` may not be, contain or lie inside ``source`` (replacing it would
    delete the model being read), nor contain the current directory (it cannot be renamed away).
    """
    from gpt2.interop.hf import is_hf_export
    from gpt2.store.checkpoint import is_checkpoint_dir

    target = out.resolve()
    if Path(source).exists():
        src = Path(source).resolve()
        if target == src or target in src.parents or src in target.parents:
            raise GPT2Error(f"--out {out} overlaps the source {source}; writing there would destroy it, choose another")
    if target == Path.cwd() or target in Path.cwd().parents:
        raise GPT2Error(f"--out {out} is or contains the current directory; choose a new directory")
    if file and out.exists() and not out.is_file():
        raise GPT2Error(f"--out {out} is a directory or another non-file; choose a file path such as model.gguf")
    if not file and out.is_file():
        raise GPT2Error(f"--out {out} is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not (is_checkpoint_dir(out) or is_hf_export(out)):
            raise GPT2Error(
                f"--out {out} already exists and holds files gpt2 did not write (not a checkpoint or export of "
                "ours); --force replaces only those: choose a new directory"
            )
        if not force:
            raise GPT2Error(f"--out {out} already exists and is not empty; pass --force to replace it")
    if file and out.is_file():
        with out.open("rb") as existing:
            if existing.read(4) != b"GGUF":
                raise GPT2Error(f"--out {out} is a file gpt2 did not write (not a GGUF file); choose a new path")
        if not force:
            raise GPT2Error(f"--out {out} already exists; pass --force to replace it")


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
    from gpt2.interop.hf import load_hf_model
    from gpt2.interop.nanogpt import import_nanogpt
    from gpt2.store.checkpoint import save_model

    _check_output(args.out, args.force, args.src)
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
    parser.add_argument(
        "model", help="any model gpt2.load accepts: checkpoint dir, run dir (its latest), HF dir or hub name, .pt file"
    )
    parser.add_argument(
        "--format", choices=EXPORT_FORMATS, default="hf", help="hf: a Hugging Face directory; gguf: one llama.cpp file"
    )
    parser.add_argument("--out", required=True, type=Path, help="directory (hf) or file (gguf) to write")
    parser.add_argument(
        "--quant", metavar="{f32,f16,q8_0}", help="gguf only: how the weight matrices are stored (default f32, exact)"
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it already exists")


def run_export(args: argparse.Namespace) -> int:
    from gpt2.store.load import load

    gguf = args.format == "gguf"
    if args.quant is not None and not gguf:
        raise GPT2Error("--quant applies to --format gguf only")
    if gguf:
        from gpt2.interop.gguf import check_quant, export_gguf

        quant = check_quant(args.quant or "f32")  # before loading the model
    _check_output(args.out, args.force, args.model, file=gguf)
    model = load(args.model)
    if gguf:
        export_gguf(model, args.out, quant, name=Path(args.model).name)
        size = args.out.stat().st_size / 1e6
        print(f"exported {args.model} -> {args.out} (GGUF {quant}, {size:.1f} MB; {_summary(model)})")
        return 0
    from gpt2.interop.hf import export_hf

    export_hf(model, args.out)
    print(f"exported {args.model} -> {args.out} (Hugging Face GPT2LMHeadModel; {_summary(model)})")
    return 0
