"""``gpt2 info CHECKPOINT|SIZE``: what a model is, without loading more than needed.

A one-module command, light at import: torch and the checkpoint reader load only when a model is described.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpt2.config import CONFIGS, SIZE_ALIASES, GPTConfig
from gpt2.errors import GPT2Error


def parameter_count(config: GPTConfig) -> int:
    """Distinct parameters of a model with ``config`` (built on the meta device: no memory used)."""
    import torch

    from gpt2.model import GPT

    with torch.device("meta"):
        return GPT(config).num_parameters()


def describe(spec: str) -> dict:
    """Config, parameter count and metadata of a registry size, checkpoint dir or run dir."""
    from gpt2.checkpoint import is_checkpoint_dir, read_config, read_meta
    from gpt2.rundir import latest_checkpoint

    path = Path(spec)
    if spec in CONFIGS or spec in SIZE_ALIASES:
        config, meta, source = GPTConfig.named(spec), {}, f"size {spec}"
    elif path.is_dir() and not is_checkpoint_dir(path) and latest_checkpoint(path) is not None:
        ckpt = latest_checkpoint(path)
        config, meta, source = read_config(ckpt), read_meta(ckpt), str(ckpt)
    elif not path.exists():
        known = ", ".join([*CONFIGS, *SIZE_ALIASES])
        raise GPT2Error(f"{spec!r} is neither a model size ({known}) nor an existing checkpoint directory")
    else:
        config, meta, source = read_config(path), read_meta(path), str(path)
    return {"source": source, "config": config.to_dict(), "parameters": parameter_count(config), "meta": meta}


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a size name (124M, tiny, ...), a checkpoint directory or a run directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.model)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"source:     {info['source']}")
    print("config:     " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))
    print(f"parameters: {info['parameters']:,}")
    for key in ("step", "tokens", "val_loss", "hellaswag_acc_norm"):
        if key in info["meta"]:
            print(f"{key + ':':<12}{info['meta'][key]}")
    return 0
