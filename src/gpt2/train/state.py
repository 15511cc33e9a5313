"""Training checkpoints: everything needed to continue a run as if it had never stopped.

    RUN_DIR/step_000123/
      model.safetensors, config.json, meta.json   the model (loadable by ``gpt2.load``)
      optimizer.safetensors + optimizer.json      AdamW moments, keyed by parameter name
      rng.safetensors + rng.json                  python / numpy / torch / cuda RNG states of every rank
      trainer.json                                step, tokens, data-loader position, hyper-parameters
    RUN_DIR/latest                                 "step_000123", replaced only once that directory is complete

The directory is written under a temporary name and renamed (``atomic_directory``), and
``latest`` is swapped by rename afterwards, so a crash at any point leaves the previous
checkpoint intact and pointed to. Only rank 0 writes; under FSDP every rank takes part in
gathering the full state first.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from gpt2.checkpoint import LATEST_FILE, TIED_KEY, WEIGHTS_FILE, latest_checkpoint, read_config, write_model_files
from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.fileio import atomic_directory, atomic_write_text, read_json_object, write_json
from gpt2.model import GPT
from gpt2.tensor_tree import load_tensor_tree, read_safetensors, save_tensor_tree
from gpt2.train.distributed import DistContext, all_gather_objects, barrier, broadcast_from_main

TRAINER_FILE = "trainer.json"
OPTIMIZER_TREE = "optimizer"
RNG_TREE = "rng"
STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


# ---------------------------------------------------------------- RNG states


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, and the CUDA device in use)."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------- model / optimizer state


def _parameter_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its first name (the tied head is reached as transformer.wte.weight)."""
    names: dict[int, str] = {}
    for name, param in model.named_parameters():
        names.setdefault(id(param), name)
    return names


def optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with parameter names instead of positions (the layout DCP uses for FSDP)."""
    names = _parameter_names(model)
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    raw = optimizer.state_dict()
    return {
        "state": {order[index]: value for index, value in raw["state"].items()},
        "param_groups": [{**group, "params": [order[i] for i in group["params"]]} for group in raw["param_groups"]],
    }


def load_optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_state_by_name`."""
    names = _parameter_names(model)
    index = {names[id(p)]: i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    try:
        groups = [{**group, "params": [index[n] for n in group["params"]]} for group in state["param_groups"]]
        raw = {"state": {index[name]: value for name, value in state["state"].items()}, "param_groups": groups}
        optimizer.load_state_dict(raw)
    except (KeyError, ValueError) as exc:
        raise GPT2Error(f"optimizer state does not match the model ({exc})") from None


def _fsdp_options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def gather_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    """(model state dict, optimizer state by name), complete on rank 0. Collective under FSDP."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        options = _fsdp_options(cpu_offload=True)
        return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)
    return model.state_dict(), optimizer_state_by_name(model, optimizer)


# ---------------------------------------------------------------- save


def _write_latest(run_dir: Path, name: str) -> None:
    """Point RUN_DIR/latest at ``name`` by temp file + rename: readers see the old or the new name, never half."""
    atomic_write_text(run_dir / LATEST_FILE, name + "\n")


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoint directories of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (never the one ``latest`` names); returns the deleted."""
    if keep_last <= 0:
        return []
    latest = latest_checkpoint(run_dir)
    checkpoints = [path for _, path in list_checkpoints(run_dir)]
    doomed = [path for path in checkpoints[:-keep_last] if latest is None or path.name != latest.name]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove half-written checkpoint directories left by a crash during a save."""
    for path in run_dir.glob(".step_*.tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


def save_training_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: DistContext,
    fsdp: bool,
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write ``RUN_DIR/step_{step}`` and repoint ``latest``; call on every rank (collectives inside)."""
    model_state, optim_state = gather_full_state(model, optimizer, fsdp)
    rng_states = all_gather_objects(capture_rng_state(ctx.device), ctx)
    path = run_dir / checkpoint_name(step)
    if ctx.is_main:
        config: GPTConfig = model.config
        if fsdp:
            with torch.device("meta"):
                plain = GPT(config)
            plain.load_state_dict(model_state, assign=True, strict=False)
        else:
            plain = model
        with atomic_directory(path) as tmp:
            write_model_files(tmp, plain, meta)
            save_tensor_tree(tmp, OPTIMIZER_TREE, optim_state)
            save_tensor_tree(tmp, RNG_TREE, {"ranks": rng_states})
            write_json(tmp / TRAINER_FILE, trainer_state)
        _write_latest(run_dir, path.name)
        prune_checkpoints(run_dir, keep_last)
    barrier(ctx)
    return path


# ---------------------------------------------------------------- resume


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    file = checkpoint / TRAINER_FILE
    if not file.is_file():
        raise GPT2Error(f"{checkpoint} is not a training checkpoint (no {TRAINER_FILE}); it holds only a model")
    state = read_json_object(file, "trainer state")
    if not isinstance(state.get("step"), int):
        raise GPT2Error(f"corrupt {file}: no integer 'step'")
    return state


def check_resumable(checkpoint: Path, config: GPTConfig) -> dict[str, Any]:
    """Validate ``checkpoint`` against the model config of this run (reads only); returns its trainer state."""
    saved = read_config(checkpoint)
    if saved != config:
        differences = ", ".join(
            f"{k}={v} (run wants {config.to_dict()[k]})" for k, v in saved.to_dict().items() if config.to_dict()[k] != v
        )
        raise GPT2Error(
            f"cannot resume from {checkpoint}: it was trained with another model config ({differences}); "
            "use the same --size/--config, or a new --out directory"
        )
    return read_trainer_state(checkpoint)


def _read_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, with the tied head (stored once) filled back in."""
    weights = read_safetensors(checkpoint / WEIGHTS_FILE)
    weights[TIED_KEY] = weights["transformer.wte.weight"]
    return weights


def load_training_checkpoint(
    checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext, fsdp: bool
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG state from ``checkpoint``; returns its trainer state.

    Rank 0 reads the files; under FSDP the full state is broadcast and re-sharded, otherwise every
    rank reads them itself (RUN_DIR must then be on storage every node sees).
    """
    trainer_state = read_trainer_state(checkpoint)
    if fsdp:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        weights = _read_weights(checkpoint) if ctx.is_main else {}
        optim_state = load_tensor_tree(checkpoint, OPTIMIZER_TREE) if ctx.is_main else {}
        options = _fsdp_options(broadcast_from_rank0=True)
        set_model_state_dict(model, weights, options=options)
        set_optimizer_state_dict(model, optimizer, optim_state, options=options)
    else:
        model.load_state_dict(_read_weights(checkpoint))
        load_optimizer_state_by_name(model, optimizer, load_tensor_tree(checkpoint, OPTIMIZER_TREE))
    rng = load_tensor_tree(checkpoint, RNG_TREE)["ranks"] if ctx.is_main else None
    rng = broadcast_from_main(rng, ctx)
    if ctx.rank < len(rng):
        restore_rng_state(rng[ctx.rank], ctx.device)
    return trainer_state
