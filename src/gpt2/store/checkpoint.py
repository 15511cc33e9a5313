"""Our checkpoint format: a directory, never a pickle.

    CKPT_DIR/
      model.safetensors   weights (the tied lm_head is stored once, as transformer.wte.weight)
      config.json         GPTConfig fields + {"format": "gpt2-from-scratch", "format_version": 1}
      meta.json           free-form metadata: step, tokens, val_loss, in-loop eval metrics, ... (optional)
      <name>.safetensors + <name>.json   any extra tensor tree (optimizer, RNG states: gpt2.store.tensors)

Every directory is written under a temporary name and renamed into place, so a crash
mid-save never leaves a half-written checkpoint under the final name.

This module reads and writes our format only; ``gpt2.store.load.load`` is the one entry point that
also accepts run directories, Hugging Face directories, nanoGPT ``.pt`` files and hub names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.runtime.parallel import unwrap_model
from gpt2.store.files import atomic_directory, read_json_object, write_json_atomic
from gpt2.store.rundir import latest_checkpoint
from gpt2.store.tensors import (
    TIED_KEY,
    check_finite,
    check_float_dtypes,
    check_safetensors,
    check_shapes,
    read_safetensors,
)

# The "format" marker in config.json (and the safetensors metadata) that tells our checkpoints apart from
# Hugging Face directories, which also have a config.json. The value on disk never changes.
CHECKPOINT_FORMAT = "gpt2-from-scratch"
CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"


def write_model_files(directory: str | Path, model: GPT, meta: dict[str, Any] | None = None) -> None:
    """Write weights, config and metadata of ``model`` into an existing ``directory`` (not atomic alone)."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != TIED_KEY}
    # A NaN checkpoint would only break whatever loads it later; the previous checkpoint stays the latest.
    check_finite(state, "refusing to save the checkpoint", "the model diverged; lower --lr")
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": CHECKPOINT_FORMAT})
    config = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, **model.config.to_dict()}
    write_json_atomic(directory / CONFIG_FILE, config, sort_keys=False)  # format marker first, then GPTConfig's fields
    write_json_atomic(directory / META_FILE, meta or {})


def save_model(path: str | Path, model: GPT, meta: dict[str, Any] | None = None) -> Path:
    """Atomically save ``model`` as a checkpoint directory at ``path``; returns the path."""
    model = unwrap_model(model)  # torch.compile / DDP wrappers in any order
    with atomic_directory(path) as tmp:
        write_model_files(tmp, model, meta)
    return Path(path)


def is_checkpoint_dir(path: str | Path) -> bool:
    """True if ``path`` is a directory in our format (has config.json with our format marker)."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return read_json_object(config).get("format") == CHECKPOINT_FORMAT
    except GPT2Error:  # unreadable: not ours (read_config says what is wrong when asked to load it)
        return False


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint directory ``path`` names: itself when it is one, else the one a run directory's ``latest``
    points to; None for anything else."""
    return Path(path) if is_checkpoint_dir(path) else latest_checkpoint(path)


def read_config(path: str | Path) -> GPTConfig:
    """The GPTConfig stored in checkpoint directory ``path``."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise GPT2Error(f"not a checkpoint: {path} has no {CONFIG_FILE}")
    data = read_json_object(file, "checkpoint config")
    if data.get("format") != CHECKPOINT_FORMAT:
        raise GPT2Error(f'{file} is not a {CHECKPOINT_FORMAT} config (missing "format": "{CHECKPOINT_FORMAT}")')
    version = data.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise GPT2Error(f"{file}: format_version must be a whole number, got {version!r}")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise GPT2Error(f"{file}: format_version {version} is newer than this gpt2 supports")
    try:
        return GPTConfig.from_dict(data)
    except TypeError as exc:  # a field of the wrong kind that the dataclass itself rejects
        raise GPT2Error(f"{file}: invalid model config ({exc})") from None
    except GPT2Error as exc:
        raise GPT2Error(f"{file}: {exc}") from None


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata dict of checkpoint directory ``path`` ({} when it has none)."""
    file = Path(path) / META_FILE
    return read_json_object(file, "checkpoint metadata") if file.is_file() else {}


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> GPT:
    """Load a model from checkpoint directory ``path`` (validated), in eval mode on ``device``."""
    path = Path(path)
    if not path.is_dir():
        raise GPT2Error(f"checkpoint not found: {path}")
    config = read_config(path)
    check_safetensors(path / WEIGHTS_FILE, config)  # names, shapes, dtypes from the header: before reading data
    state = read_safetensors(path / WEIGHTS_FILE)
    return model_from_state_dict(config, state, str(path / WEIGHTS_FILE)).to(device).eval()


def model_from_state_dict(config: GPTConfig, state: dict[str, torch.Tensor], source: str) -> GPT:
    """A GPT with ``config`` whose weights are the tensors of ``state`` (validated; fp32; no random init).

    ``state`` uses our key names; ``lm_head.weight`` may be absent (it is tied to the token embedding).
    Names, shapes and dtypes are checked before any module is built, and the values must be finite.
    ``source`` names the file in error messages.
    """
    check_float_dtypes({k: str(v.dtype) for k, v in state.items()}, source)
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, config, source)
    check_finite(state, source)
    state = {k: v.float() for k, v in state.items() if k != TIED_KEY}
    with torch.device("meta"):
        model = GPT(config)  # meta device: skip allocating and initialising weights we overwrite anyway
    state = {**state, TIED_KEY: state["transformer.wte.weight"]}
    model.load_state_dict(state, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # re-tie after assign
    return model
