"""Our checkpoint format: a directory, never a pickle.

    CKPT_DIR/
      model.safetensors   weights (the tied lm_head is stored once, as transformer.wte.weight)
      config.json         GPTConfig fields + {"format": "gpt2-from-scratch", "format_version": 1}
      meta.json           free-form metadata: step, tokens, val_loss, hellaswag, ... (optional)
      <name>.safetensors + <name>.json   any extra "tensor tree" (optimizer state, RNG states, ...)

Every directory is written under a temporary name and renamed into place, so a crash
mid-save never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.fileio import atomic_directory
from gpt2.model import GPT
from gpt2.rundir import latest_checkpoint  # the run-directory layout lives in rundir
from gpt2.runtime.parallel import unwrap_model

FORMAT_NAME = "gpt2-from-scratch"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
TIED_KEY = "lm_head.weight"  # alias of transformer.wte.weight, not stored


def write_model_files(directory: str | Path, model: GPT, meta: dict[str, Any] | None = None) -> None:
    """Write weights, config and metadata of ``model`` into an existing ``directory`` (not atomic alone)."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != TIED_KEY}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **model.config.to_dict()}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (directory / META_FILE).write_text(json.dumps(meta or {}, indent=2, sort_keys=True) + "\n")


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
        return json.loads(config.read_text()).get("format") == FORMAT_NAME
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_config(path: str | Path) -> GPTConfig:
    """The GPTConfig stored in checkpoint directory ``path``."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise GPT2Error(f"not a checkpoint: {path} has no {CONFIG_FILE}")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GPT2Error(f"corrupt checkpoint config {file}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise GPT2Error(f'{file} is not a {FORMAT_NAME} config (missing "format": "{FORMAT_NAME}")')
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise GPT2Error(f"{file}: format_version {data['format_version']} is newer than this gpt2 supports")
    return GPTConfig.from_dict(data)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata dict of checkpoint directory ``path`` ({} when it has none)."""
    file = Path(path) / META_FILE
    if not file.is_file():
        return {}
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GPT2Error(f"corrupt checkpoint metadata {file}: {exc}") from None
    return meta if isinstance(meta, dict) else {}


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file with a clear error when it is missing or corrupt."""
    file = Path(file)
    if not file.is_file():
        raise GPT2Error(f"missing weights file: {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise GPT2Error(f"corrupt weights file {file}: {exc}") from None


def validate_state_dict(state: dict[str, torch.Tensor], model: GPT, source: str) -> None:
    """Check that ``state`` has exactly the keys and shapes of ``model``; raise a GPT2Error naming ``source``."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != TIED_KEY}
    got = {k: tuple(v.shape) for k, v in state.items() if k != TIED_KEY}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise GPT2Error(
            f"{source}: weights do not match the config "
            f"(missing: {missing[:3] or 'none'}, unexpected: {unexpected[:3] or 'none'})"
        )
    for key, shape in expected.items():
        if got[key] != shape:
            raise GPT2Error(f"{source}: {key} has shape {list(got[key])}, config needs {list(shape)}")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> GPT:
    """Load a model from checkpoint directory ``path`` (validated), in eval mode on ``device``."""
    path = Path(path)
    if not path.is_dir():
        raise GPT2Error(f"checkpoint not found: {path}")
    config = read_config(path)
    state = read_safetensors(path / WEIGHTS_FILE)
    return model_from_state_dict(config, state, str(path / WEIGHTS_FILE)).to(device).eval()


def model_from_state_dict(config: GPTConfig, state: dict[str, torch.Tensor], source: str) -> GPT:
    """A GPT with ``config`` whose weights are the tensors of ``state`` (validated; no copy, no random init).

    ``state`` uses our key names; ``lm_head.weight`` may be absent (it is tied to the token embedding).
    ``source`` names the file in error messages.
    """
    with torch.device("meta"):
        model = GPT(config)  # meta device: skip allocating and initialising weights we overwrite anyway
    validate_state_dict(state, model, source)
    state = {**state, TIED_KEY: state["transformer.wte.weight"]}
    model.load_state_dict(state, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # re-tie after assign
    return model


def save_tensor_tree(directory: str | Path, name: str, tree: Any) -> None:
    """Save a nested dict/list of tensors and JSON scalars as ``name.safetensors`` + ``name.json``.

    Used for optimizer and RNG states, which are nested structures torch would otherwise pickle.
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = node.detach().contiguous().cpu()
            return {"__tensor__": key}
        if isinstance(node, dict):
            return {"__dict__": [[encode(k), encode(v)] for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            return {"__list__": [encode(v) for v in node], "tuple": isinstance(node, tuple)}
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} in a tensor tree")

    skeleton = encode(tree)
    directory = Path(directory)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(skeleton))


def load_tensor_tree(directory: str | Path, name: str) -> Any:
    """Inverse of :func:`save_tensor_tree`."""
    directory = Path(directory)
    skeleton_file = directory / f"{name}.json"
    if not skeleton_file.is_file():
        raise GPT2Error(f"checkpoint {directory} is missing {skeleton_file.name}")
    try:
        skeleton = json.loads(skeleton_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GPT2Error(f"corrupt {skeleton_file}: {exc}") from None
    tensors = read_safetensors(directory / f"{name}.safetensors")

    def decode(node: Any) -> Any:
        if isinstance(node, dict):
            if "__tensor__" in node:
                return tensors[node["__tensor__"]]
            if "__dict__" in node:
                return {decode(k): decode(v) for k, v in node["__dict__"]}
            if "__list__" in node:
                items = [decode(v) for v in node["__list__"]]
                return tuple(items) if node.get("tuple") else items
        return node

    return decode(skeleton)


def load(spec: str | Path, device: torch.device | str = "cpu") -> GPT:
    """Load a model in eval mode from any supported source.

    ``spec`` may be: one of our checkpoint directories; a training run directory (its latest
    checkpoint); a local Hugging Face GPT-2 directory; a nanoGPT/build-nanogpt ``.pt`` file
    (read without unpickling code); or a Hugging Face hub name such as ``gpt2`` (needs network).
    """
    path = Path(spec)
    if path.is_dir():
        if is_checkpoint_dir(path):
            return load_checkpoint(path, device)
        latest = latest_checkpoint(path)
        if latest is not None:
            return load_checkpoint(latest, device)
        if (path / "config.json").is_file():
            from gpt2.interop import load_hf_model

            return load_hf_model(str(path), device=device)
        raise GPT2Error(f"{path} is neither a checkpoint, a run directory nor a Hugging Face model directory")
    if path.is_file():
        if path.suffix in (".pt", ".pth", ".ckpt"):
            from gpt2.interop import load_nanogpt_checkpoint

            return load_nanogpt_checkpoint(path).to(device).eval()
        raise GPT2Error(f"{path}: unsupported model file (expected a checkpoint directory or a .pt file)")
    if str(spec).startswith((".", "/")) or os.sep in str(spec) and not str(spec).count("/") == 1:
        raise GPT2Error(f"model not found: {spec}")
    from gpt2.interop import load_hf_model

    return load_hf_model(str(spec), device=device)
