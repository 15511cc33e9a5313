"""Save and restore a training run's stateful components as ONE checkpoint: ``RUN_DIR/step_N/``.

The components are a dict ``{name: Stateful}`` (see :mod:`gpt2.train.state`): the trainer passes
model, optimizer, RNG and train state; a second optimizer or any new component is one more entry,
with no change here or in the trainer's save code. A component is stored under its name — as
``NAME.safetensors + NAME.json`` (a tensor tree) unless it writes its own files — so the layout is::

    RUN_DIR/step_000123/
      model.safetensors, config.json, meta.json   "model"      (loadable by ``gpt2.load``)
      optimizer.safetensors + optimizer.json      "optimizer"  (AdamW moments, keyed by parameter name)
      rng.safetensors + rng.json                  "rng"        (python / numpy / torch / cuda, every rank)
      trainer.json                                "trainer"    (step, tokens, data position, hyper-parameters)
    RUN_DIR/latest                                "step_000123", replaced only once that directory is complete

The directory is written under a temporary name and renamed (``atomic_directory``), and ``latest``
is repointed afterwards, so a crash at any point leaves the previous checkpoint intact and pointed
to. Every rank calls :meth:`Checkpointer.save` / :meth:`Checkpointer.load` (FSDP gathers and
broadcasts inside the components); only rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.runtime.distributed import DistContext, barrier
from gpt2.store.checkpoint import read_config
from gpt2.store.files import atomic_directory, write_error
from gpt2.store.rundir import checkpoint_name, prune_checkpoints, write_latest
from gpt2.store.tensor_tree import load_tensor_tree, save_tensor_tree
from gpt2.train.state import Stateful, read_trainer_state


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


class Checkpointer:
    """Writes ``run_dir/step_N`` from ``components`` (keeping the newest ``keep_last``; 0 = all) and reads it back."""

    def __init__(self, run_dir: Path, components: dict[str, Stateful], ctx: DistContext, keep_last: int):
        self.run_dir, self.components, self.ctx, self.keep_last = Path(run_dir), components, ctx, keep_last

    def save(self, step: int) -> Path:
        """Save every component as ``run_dir/step_{step}``, repoint ``latest``, prune; call on every rank."""
        states = {name: component.state_dict() for name, component in self.components.items()}  # may be collective
        path = self.run_dir / checkpoint_name(step)
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
