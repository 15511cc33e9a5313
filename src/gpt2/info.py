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
    """Distinct parameters of a model with ``config``, from the weights' shapes (nothing is built or allocated)."""
    from gpt2.store.weights import count_parameters, expected_shapes

    return count_parameters(expected_shapes(config))


def _describe_path(path: Path) -> tuple[GPTConfig, int, dict, str]:
    """(config, parameters counted from the stored weights' shapes, metadata, source) of a model on disk.

    The config file alone is never trusted: the weights' names and shapes (a safetensors header, or the
    tensors of a ``.pt``) must agree with it, and their shapes give the parameter count.
    """
    from gpt2.store.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_checkpoint_dir, read_config, read_meta
    from gpt2.store.rundir import latest_checkpoint
    from gpt2.store.weights import check_safetensors, count_parameters

    if path.is_file():
        from gpt2.store.load import TORCH_FILE_SUFFIXES

        if path.suffix not in TORCH_FILE_SUFFIXES:
            raise GPT2Error(f"{path}: unsupported model file (expected a checkpoint directory or a .pt file)")
        from gpt2.interop.nanogpt import read_nanogpt

        config, state, meta = read_nanogpt(path)
        return config, count_parameters({k: tuple(v.shape) for k, v in state.items()}), meta, str(path)
    checkpoint = path if is_checkpoint_dir(path) else latest_checkpoint(path)
    if checkpoint is not None:
        config = read_config(checkpoint)
        shapes = check_safetensors(checkpoint / WEIGHTS_FILE, config)
        return config, count_parameters(shapes), read_meta(checkpoint), str(checkpoint)
    if not (path / CONFIG_FILE).is_file():
        raise GPT2Error(f"{path} is neither a checkpoint, a run directory nor a Hugging Face model directory")
    from gpt2.interop.hf import config_from_hf, read_hf_weights
    from gpt2.store.files import read_json_object

    config = config_from_hf(read_json_object(path / CONFIG_FILE, "Hugging Face config"), str(path))
    state = read_hf_weights(path, config)  # header-checked before its data is read
    return config, count_parameters({k: tuple(v.shape) for k, v in state.items()}), {}, str(path)


def describe(spec: str) -> dict:
    """Config, parameter count and metadata of a registry size or of any model on disk that ``gpt2.load`` reads."""
    path = Path(spec)
    if spec in CONFIGS or spec in SIZE_ALIASES:
        config = GPTConfig.named(spec)
        return {"source": f"size {spec}", "config": config.to_dict(), "parameters": parameter_count(config), "meta": {}}
    if not path.exists():
        known = ", ".join([*CONFIGS, *SIZE_ALIASES])
        raise GPT2Error(f"{spec!r} is neither a model size ({known}) nor an existing checkpoint directory")
    config, parameters, meta, source = _describe_path(path)
    return {"source": source, "config": config.to_dict(), "parameters": parameters, "meta": meta}


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a size (124M, tiny, ...), checkpoint or run dir, Hugging Face dir or .pt file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.model)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"source:     {info['source']}")
    print("config:     " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))
    print(f"parameters: {info['parameters']:,}")
    for key in ("step", "tokens", "val_loss", "val_tokens", "hellaswag_acc_norm"):
        if key in info["meta"]:
            print(f"{key + ':':<12}{info['meta'][key]}")
    return 0
