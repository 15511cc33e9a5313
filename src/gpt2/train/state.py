"""The trainer's own checkpoint component: where the run is (``trainer.json``), and the checks before a resume.

Model, optimizer and RNG states are generic components of :mod:`gpt2.store.checkpointer`; this one knows the
TrainConfig, the data loader position and the GradScaler, which live inside ``trainer.json`` (the layout
every existing run directory has).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.store.checkpoint import read_config
from gpt2.store.files import read_json_object, write_json_atomic
from gpt2.train.config import TrainConfig

TRAINER_FILE = "trainer.json"


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """``CHECKPOINT/trainer.json``, checked to be a training checkpoint's."""
    file = checkpoint / TRAINER_FILE
    if not file.is_file():
        raise GPT2Error(f"{checkpoint} is not a training checkpoint (no {TRAINER_FILE}); it holds only a model")
    state = read_json_object(file, "trainer state")
    for key in ("step", "tokens"):
        if type(state.get(key)) is not int or state[key] < 0:
            raise GPT2Error(f"corrupt {file}: no whole number '{key}'")
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


class TrainState:
    """Where the run is: step, training time, last evaluation, the data loader position and the GradScaler.

    Saved as ``trainer.json`` (with the hyper-parameters, world size and batch, for the record and
    for the "same run?" warning on resume). ``tokens`` counts what the steps consumed (the trainer adds each step's
    ``batch_tokens``), right after a resume with another batch too.
    """

    def __init__(self, config: TrainConfig, loader: Any, scaler: torch.amp.GradScaler, world_size: int):
        self.config, self.loader, self.scaler, self.world_size = config, loader, scaler, world_size
        self.step = 0
        self.tokens = 0
        self.elapsed = 0.0  # seconds trained before this process (from the checkpoint)
        self.last_eval: dict[str, Any] = {}
        self.last_loss: float | None = None  # newest finite train loss (meta.json, the summary)
        self.saved: dict[str, Any] = {}  # the trainer.json this run resumed from
        self.init_from: dict[str, Any] | None = None  # where the initial weights came from (gpt2.train.init)
        self._clock_start = time.time()

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
        """meta.json of a checkpoint: what ``gpt2 info`` and the app show about it, with the newest value of every
        in-loop metric (gpt2.evaluate.slots)."""
        cfg = self.config
        base = {"step": self.step, "tokens": self.tokens, "train_loss": self.last_loss, "size": cfg.size}
        source = {"init_from": self.init_from} if self.init_from is not None else {}
        return {**base, "data": str(cfg.data), **self.last_eval, **source}

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
        self.step, self.tokens = state["step"], state["tokens"]
        self.last_eval = dict(state.get("last_eval", {}))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.init_from = state.get("init_from")
        self.loader.load_state_dict(state["loader"])
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])

    def write_files(self, directory: Path, state: dict[str, Any]) -> None:
        write_json_atomic(directory / TRAINER_FILE, state)

    def read_files(self, directory: Path) -> dict[str, Any]:
        return read_trainer_state(directory)
