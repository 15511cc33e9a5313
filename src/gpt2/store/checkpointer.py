"""Save and restore a training run's stateful components as ONE checkpoint: ``RUN_DIR/step_N/``.

A component (torchtitan's "Stateful") is any object with ``state_dict()`` / ``load_state_dict()``. The
trainer passes ``{name: component}``: model, optimizer and RNG (here) and its own train state
(:mod:`gpt2.train.state`); a second optimizer or any new component is one more entry, with no change here
or in the trainer's save code. A component is stored under its name — as ``NAME.safetensors + NAME.json``
(a tensor tree) unless it writes its own files — so the layout is::

    RUN_DIR/step_000123/
      model.safetensors, config.json, meta.json   "model"      (loadable by ``gpt2.load``)
      optimizer.safetensors + optimizer.json      "optimizer"  (AdamW moments, keyed by parameter name)
      rng.safetensors + rng.json                  "rng"        (python / numpy / torch / cuda, every rank)
      trainer.json                                "trainer"    (step, tokens, data position, hyper-parameters)
    RUN_DIR/latest                                "step_000123", replaced only once that directory is complete

The directory is written under a temporary name and renamed (``atomic_directory``), and ``latest``
is repointed afterwards, so a crash at any point leaves the previous checkpoint intact and pointed
to. Every rank calls :meth:`Checkpointer.save` / :meth:`Checkpointer.load` (FSDP gathers and
broadcasts inside the components); only rank 0 writes. Model and optimizer states are keyed by
parameter NAME, so they do not depend on how the parameters were grouped or sharded.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError

from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.runtime.distributed import DistContext, all_gather_objects, barrier, broadcast_from_main
from gpt2.store.checkpoint import WEIGHTS_FILE, write_model_files
from gpt2.store.files import atomic_directory, write_error
from gpt2.store.rundir import RunDir, prune_checkpoints, write_latest
from gpt2.store.tensors import TIED_KEY, load_tensor_tree, read_safetensors, save_tensor_tree


class Stateful(Protocol):
    """What the checkpointer saves: ``state_dict()`` is called on every rank (it may be collective);
    ``load_state_dict()`` gets what was saved (``{}`` on ranks other than 0 for a ``from_main_only``
    component, which then broadcasts itself).

    Optional: ``write_files(directory, state)`` / ``read_files(directory) -> state`` for a custom
    on-disk form, and ``from_main_only = True`` when only rank 0 should read the files.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Checkpointer:
    """Writes ``run_dir/step_N`` from ``components`` (keeping the newest ``keep_last``; 0 = all) and reads it back."""

    def __init__(self, run_dir: Path, components: dict[str, Stateful], ctx: DistContext, keep_last: int):
        self.run_dir, self.components, self.ctx, self.keep_last = Path(run_dir), components, ctx, keep_last

    def save(self, step: int) -> Path:
        """Save every component as ``run_dir/step_{step}``, repoint ``latest``, prune; call on every rank."""
        states = {name: component.state_dict() for name, component in self.components.items()}  # may be collective
        path = RunDir(self.run_dir).checkpoint(step)
        if self.ctx.is_main:
            try:
                with atomic_directory(path) as tmp:
                    for name, component in self.components.items():
                        if hasattr(component, "write_files"):
                            component.write_files(tmp, states[name])
                        else:
                            save_tensor_tree(tmp, name, states[name])
                write_latest(self.run_dir, path.name)
            except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error type
                raise GPT2Error(
                    f"saving the checkpoint of step {step} in {self.run_dir} failed: {write_error(exc, self.run_dir)}; "
                    "the previous checkpoint is intact"
                ) from None
            prune_checkpoints(self.run_dir, self.keep_last)
        barrier(self.ctx)
        return path

    def load(self, checkpoint: Path) -> None:
        """Restore every component from ``checkpoint``, in the order given; call on every rank.

        Rank 0 reads the files of ``from_main_only`` components (they broadcast); every rank reads the
        others itself (RUN_DIR must then be on storage every node sees).
        """
        for name, component in self.components.items():
            state: Any = {}
            if self.ctx.is_main or not getattr(component, "from_main_only", False):
                if hasattr(component, "read_files"):
                    state = component.read_files(checkpoint)
                else:
                    state = load_tensor_tree(checkpoint, name)
            component.load_state_dict(state)


# ---------------------------------------------------------------- the model


def _full_state(**options: Any) -> tuple[Any, Any]:
    """FSDP: torch.distributed.checkpoint's state-dict API, and its options for the full (unsharded) state."""
    from torch.distributed.checkpoint import state_dict as dcp

    return dcp, dcp.StateDictOptions(full_state_dict=True, **options)


class ModelState:
    """The model weights, as ``model.safetensors + config.json + meta.json`` (loadable by ``gpt2.load``).

    ``meta`` supplies the metadata written with them (step, tokens, losses). Under FSDP the full state is
    gathered to rank 0 on save and broadcast from it on load.
    """

    def __init__(self, model: GPT, fsdp: bool, meta: Callable[[], dict[str, Any]]):
        self.model, self.fsdp, self.meta = model, fsdp, meta
        self.from_main_only = fsdp

    def state_dict(self) -> dict[str, Any]:
        if not self.fsdp:
            return self.model.state_dict()
        dcp, options = _full_state(cpu_offload=True)
        return dcp.get_model_state_dict(self.model, options=options)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.fsdp:
            dcp, options = _full_state(broadcast_from_rank0=True)
            dcp.set_model_state_dict(self.model, state, options=options)
        else:
            self.model.load_state_dict(state)

    def write_files(self, directory: Path, state: dict[str, Any]) -> None:
        plain = self.model
        if self.fsdp:  # the gathered full state in a plain (unsharded) GPT, built without allocating weights
            with torch.device("meta"):
                plain = GPT(self.model.config)
            plain.load_state_dict(state, assign=True, strict=False)
        write_model_files(directory, plain, self.meta())

    def read_files(self, directory: Path) -> dict[str, Any]:
        weights = read_safetensors(directory / WEIGHTS_FILE)
        weights[TIED_KEY] = weights["transformer.wte.weight"]  # the tied head is stored once
        return weights


# ---------------------------------------------------------------- an optimizer


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


class OptimizerState:
    """One optimizer's state keyed by parameter name (a tensor tree named after the component)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool):
        self.model, self.optimizer, self.fsdp = model, optimizer, fsdp
        self.from_main_only = fsdp

    def state_dict(self) -> dict[str, Any]:
        if not self.fsdp:
            return optimizer_state_by_name(self.model, self.optimizer)
        dcp, options = _full_state(cpu_offload=True)
        return dcp.get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.fsdp:
            dcp, options = _full_state(broadcast_from_rank0=True)
            dcp.set_optimizer_state_dict(self.model, self.optimizer, state, options=options)
        else:
            load_optimizer_state_by_name(self.model, self.optimizer, state)


# ---------------------------------------------------------------- the RNG states of every rank


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, and the CUDA device in use)."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), np_pos, np_has_gauss, np_gauss],
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


class RNGState:
    """The RNG states of every rank, ``{"ranks": [rank 0's, rank 1's, ...]}``; each rank gets its own back."""

    from_main_only = True

    def __init__(self, ctx: DistContext):
        self.ctx = ctx

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": all_gather_objects(capture_rng_state(self.ctx.device), self.ctx)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = broadcast_from_main(state.get("ranks"), self.ctx)
        if self.ctx.rank < len(ranks):  # more ranks than the saving run: the new ones keep their seeds
            restore_rng_state(ranks[self.ctx.rank], self.ctx.device)
