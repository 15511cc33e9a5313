"""The stateful components of a training checkpoint: everything needed to continue a run as if it never stopped.

Model, optimizer, RNG states of every rank, train state: each is one component (torchtitan's
"Stateful"; the directory layout is in :mod:`gpt2.train.checkpointer`): an object with ``state_dict()`` /
``load_state_dict()``, saved by :class:`gpt2.train.checkpointer.Checkpointer` under its name.
A component that needs its own files (the model, ``trainer.json``) says so with
``write_files`` / ``read_files``; any other is a tensor tree ``NAME.safetensors + NAME.json``.
Model and optimizer states are keyed by parameter NAME, so they do not depend on how the
parameters were grouped or sharded. The data loader position and the GradScaler live inside
``trainer.json`` (the layout every existing run directory has).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn

from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.runtime.distributed import DistContext, all_gather_objects, broadcast_from_main
from gpt2.store.checkpoint import TIED_KEY, WEIGHTS_FILE, write_model_files
from gpt2.store.files import read_json_object, write_json
from gpt2.store.tensor_tree import read_safetensors
from gpt2.train.config import TrainConfig

TRAINER_FILE = "trainer.json"
# The last eval results, copied into meta.json (val_tokens: how many tokens val_loss covers).
SAVED_EVALS = ("val_loss", "val_tokens", "hellaswag_acc_norm", "hellaswag_acc")


class Stateful(Protocol):
    """What the checkpointer saves: ``state_dict()`` is called on every rank (it may be collective);
    ``load_state_dict()`` gets what was saved (``{}`` on ranks other than 0 for a ``from_main_only``
    component, which then broadcasts itself).

    Optional: ``write_files(directory, state)`` / ``read_files(directory) -> state`` for a custom
    on-disk form, and ``from_main_only = True`` when only rank 0 should read the files.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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


# ---------------------------------------------------------------- the components


class ModelState:
    """The model weights, as ``model.safetensors + config.json + meta.json`` (loadable by ``gpt2.load``).

    ``meta`` supplies the metadata written with them (step, tokens, losses). Under FSDP the full state is
    gathered to rank 0 on save and broadcast from it on load.
    """

    def __init__(self, model: nn.Module, fsdp: bool, meta: Callable[[], dict[str, Any]]):
        self.model, self.fsdp, self.meta = model, fsdp, meta
        self.from_main_only = fsdp

    def state_dict(self) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            return get_model_state_dict(self.model, options=_fsdp_options(cpu_offload=True))
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            set_model_state_dict(self.model, state, options=_fsdp_options(broadcast_from_rank0=True))
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


class OptimizerState:
    """One optimizer's state keyed by parameter name (a tensor tree named after the component)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool):
        self.model, self.optimizer, self.fsdp = model, optimizer, fsdp
        self.from_main_only = fsdp

    def state_dict(self) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.optimizer, options=_fsdp_options(cpu_offload=True))
        return optimizer_state_by_name(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

            options = _fsdp_options(broadcast_from_rank0=True)
            set_optimizer_state_dict(self.model, self.optimizer, state, options=options)
        else:
            load_optimizer_state_by_name(self.model, self.optimizer, state)


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


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """``CHECKPOINT/trainer.json``, checked to be a training checkpoint's."""
    file = checkpoint / TRAINER_FILE
    if not file.is_file():
        raise GPT2Error(f"{checkpoint} is not a training checkpoint (no {TRAINER_FILE}); it holds only a model")
    state = read_json_object(file, "trainer state")
    if not isinstance(state.get("step"), int):
        raise GPT2Error(f"corrupt {file}: no integer 'step'")
    return state


class TrainState:
    """Where the run is: step, training time, last evaluation, the data loader position and the GradScaler.

    Saved as ``trainer.json`` (with the hyper-parameters, world size and batch, for the record and
    for the "same run?" warning on resume). ``tokens`` = ``step * batch_tokens``.
    """

    def __init__(self, config: TrainConfig, loader: Any, scaler: torch.amp.GradScaler, world_size: int):
        self.config, self.loader, self.scaler, self.world_size = config, loader, scaler, world_size
        self.step = 0
        self.elapsed = 0.0  # seconds trained before this process (from the checkpoint)
        self.last_eval: dict[str, Any] = {}
        self.last_loss: float | None = None  # newest finite train loss (meta.json, the summary)
        self.saved: dict[str, Any] = {}  # the trainer.json this run resumed from
        self.init_from: dict[str, Any] | None = None  # where the initial weights came from (gpt2.train.init)
        self._clock_start = time.time()

    @property
    def tokens(self) -> int:
        return self.step * self.config.batch_tokens

    def start_clock(self) -> None:
        """Start counting training time, continuing from the checkpoint's (``time`` in metrics spans sessions)."""
        self._clock_start = time.time() - self.elapsed

    def clock(self) -> float:
        """Seconds trained over all sessions of the run."""
        return time.time() - self._clock_start

    def same_run_shape(self) -> bool:
        """Whether the resumed-from run had this world size and batch (else losses differ from an unbroken run)."""
        return self.saved.get("world_size") == self.world_size and self.saved.get("batch_tokens") == (
            self.config.batch_tokens
        )

    def meta(self) -> dict[str, Any]:
        """meta.json of a checkpoint: what ``gpt2 info`` and the app show about it."""
        cfg = self.config
        evals = {k: v for k, v in self.last_eval.items() if k in SAVED_EVALS}
        base = {"step": self.step, "tokens": self.tokens, "train_loss": self.last_loss, "size": cfg.size}
        source = {"init_from": self.init_from} if self.init_from is not None else {}
        return {**base, "data": str(cfg.data), **evals, **source}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "loader": self.loader.state_dict(),
            "world_size": self.world_size,
            "batch_tokens": self.config.batch_tokens,
            "last_eval": self.last_eval,
            "elapsed": self.clock(),
            "config": self.config.to_dict(),
        }
        if self.init_from is not None:
            state["init_from"] = self.init_from
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = state
        self.step = state["step"]
        self.last_eval = dict(state.get("last_eval", {}))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.init_from = state.get("init_from")
        self.loader.load_state_dict(state["loader"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])

    def write_files(self, directory: Path, state: dict[str, Any]) -> None:
        write_json(directory / TRAINER_FILE, state)

    def read_files(self, directory: Path) -> dict[str, Any]:
        return read_trainer_state(directory)
