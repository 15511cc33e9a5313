"""Read ``.pt`` checkpoints of build-nanogpt / nanoGPT without running their pickles.

These files are ``torch.save``-d dicts such as::

    {'model': state_dict, 'config': GPTConfig(...), 'step': 19072, 'val_loss': 3.07}      # build-nanogpt
    {'model': state_dict, 'model_args': {...}, 'iter_num': 5000, 'best_val_loss': ..., ...} # nanoGPT

A pickle can call any Python function while loading, so a ``.pt`` from the internet is
code, not data. We only ever use ``torch.load(weights_only=True)``, which rebuilds tensors
and plain containers and refuses every other global. The one foreign object these files
legitimately hold is the trainer's ``GPTConfig`` dataclass instance: before loading we
list the pickle's globals, and each one whose name ends in ``Config`` is mapped to
:class:`ForeignConfig`, a harmless stand-in that just records the fields it is given.
Any other global (``os.system``, ``builtins.eval``, a custom class ...) means the file is
refused before a single opcode runs.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.interop.state_dict import check_tied_head, drop_attention_buffers
from gpt2.model import GPT
from gpt2.store.checkpoint import model_from_state_dict
from gpt2.store.tensors import check_shapes, expected_shapes

# Prefixes added by torch.compile (`_orig_mod.`) and DDP / DataParallel (`module.`) wrappers.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
# "module.GPTConfig", "__main__.GPTConfig", "model.ModelConfig": a config class, mapped to ForeignConfig.
CONFIG_GLOBAL = re.compile(r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*Config$")
CONFIG_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd")


class ForeignConfig:
    """Stand-in for a trainer's config class inside a pickle: stores the fields, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.fields: dict[str, Any] = dict(kwargs)

    def __setstate__(self, state: Any) -> None:
        # pickle's BUILD passes the instance __dict__, or (__dict__, slots) for classes with __slots__.
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        self.fields = dict(state) if isinstance(state, dict) else {}


def _pickle_globals(path: Path) -> list[str]:
    """The ``module.name`` globals the pickle inside ``path`` refers to, beyond torch's safe defaults."""
    if not zipfile.is_zipfile(path):
        # torch < 1.6 "legacy" format: no static scan, so no stand-ins; weights_only alone still refuses any
        # global it does not know, so such files load only if they hold nothing but tensors and plain values.
        return []
    try:
        _check_inflated_size(path)
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as exc:
        raise GPT2Error(f"{path}: not a readable torch checkpoint ({exc})") from None


def read_pt(path: str | Path) -> Any:
    """The object saved in ``path`` by ``torch.save``, loaded with ``weights_only=True`` (no code runs).

    Config-class instances come back as :class:`ForeignConfig`; anything else that is not a
    tensor or plain container makes this raise a GPT2Error.
    """
    path = Path(path)
    if not path.is_file():
        raise GPT2Error(f"checkpoint file not found: {path}")
    stand_ins: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = []  # safe_globals' own type
    for name in _pickle_globals(path):
        if not CONFIG_GLOBAL.match(name):
            raise GPT2Error(
                f"{path}: refusing to load, the pickle references {name!r}, which is neither a tensor nor a "
                "model config (a .pt file can run arbitrary code; only weights and a GPTConfig are accepted)"
            )
        stand_ins.append((type(name.rsplit(".", 1)[1], (ForeignConfig,), {}), name))
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a malformed pickle can fail in many ways (UnpicklingError, TypeError, KeyError...)
        raise GPT2Error(f"{path}: cannot load safely ({_unpickler_reason(exc)})") from None


# Where torch's own advice starts in a load error: allow-listing globals or weights_only=False, i.e. running the
# pickle's code. We never give that advice, so the message is cut there.
_TORCH_ADVICE = ("Please use", "Re-running", "weights_only", "If you trust", "Check the documentation", "In PyTorch")
# torch.save stores entries uncompressed, so a real .pt inflates to about its own size; a zip bomb does not.
MAX_INFLATION = 4  # uncompressed bytes per byte on disk, beyond MAX_INFLATION_SLACK
MAX_INFLATION_SLACK = 64 * 2**20


def _unpickler_reason(exc: Exception) -> str:
    """The informative part of a torch.load error, without torch's advice to trust or unpickle the file."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    for marker in _TORCH_ADVICE:
        text = text.split(marker, 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].rstrip(". ") if lines else type(exc).__name__


def _check_inflated_size(path: Path) -> None:
    """Refuse a zip archive whose index says it inflates far beyond its size on disk (before reading it)."""
    with zipfile.ZipFile(path) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    limit = MAX_INFLATION * path.stat().st_size + MAX_INFLATION_SLACK
    if inflated > limit:
        raise GPT2Error(
            f"{path}: refusing to load, its entries inflate to {inflated / 1e9:.2f} GB from "
            f"{path.stat().st_size / 1e6:.1f} MB on disk (torch.save never compresses; this looks like a zip bomb)"
        )


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _config_fields(checkpoint: dict[str, Any]) -> dict[str, Any]:
    # nanoGPT's 'model_args' holds the model shape; its 'config' is the training config (also has n_layer...).
    for key in ("model_args", "config"):
        value = checkpoint.get(key)
        if isinstance(value, ForeignConfig):
            value = value.fields
        if isinstance(value, dict) and "n_layer" in value:
            return value
    return {}


def _infer_config(fields: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> GPTConfig:
    """GPTConfig from the saved config, with sizes the weights determine filled in when it omits them."""
    inferred = {}
    if "transformer.wte.weight" in state:
        inferred["vocab_size"], inferred["n_embd"] = state["transformer.wte.weight"].shape
    if "transformer.wpe.weight" in state:
        inferred["block_size"] = state["transformer.wpe.weight"].shape[0]
    inferred["n_layer"] = len({k.split(".")[2] for k in state if k.startswith("transformer.h.")})
    merged = {**inferred, **{k: fields[k] for k in CONFIG_FIELDS if k in fields}}
    if "n_head" not in merged:
        raise GPT2Error(f"{source}: no model config (n_head) stored with the weights; cannot rebuild the model")
    try:
        return GPTConfig.from_dict(merged)
    except (GPT2Error, TypeError) as exc:
        raise GPT2Error(f"{source}: invalid model config {merged}: {exc}") from None


def _to_number(value: Any) -> float | int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_nanogpt(path: str | Path) -> tuple[GPTConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, weights in our key names, metadata: step / val_loss when saved) of a build-nanogpt/nanoGPT ``.pt``.

    Nothing is built: the weights' names and shapes are checked against the config here, so a hostile
    config (a million layers) fails before any module exists.
    """
    source = str(path)
    checkpoint = read_pt(path)
    if not isinstance(checkpoint, dict):
        raise GPT2Error(f"{source}: expected a dict with a 'model' state dict, got {type(checkpoint).__name__}")
    raw_state = checkpoint.get("model", checkpoint)  # also accept a bare state dict
    if not isinstance(raw_state, dict) or not all(isinstance(v, torch.Tensor) for v in raw_state.values()):
        raise GPT2Error(f"{source}: 'model' is not a state dict of tensors")
    state = {_strip_prefixes(k): v for k, v in raw_state.items()}
    state = check_tied_head(drop_attention_buffers(state), source)
    fields = _config_fields(checkpoint)
    config = _infer_config(fields, state, source)
    if fields.get("bias") is False:
        # nanoGPT's bias=False drops the Linear and LayerNorm biases; a zero bias computes exactly the same.
        for key, shape in expected_shapes(config).items():  # the config is bounded (GPTConfig), the list short
            if key.endswith(".bias") and key not in state:
                state[key] = torch.zeros(shape)
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, config, source)
    meta: dict[str, Any] = {"source": str(Path(path).resolve()), "imported_from": "nanogpt"}
    for meta_key, keys in (("step", ("step", "iter_num")), ("val_loss", ("val_loss", "best_val_loss"))):
        for key in keys:
            number = _to_number(checkpoint.get(key))
            if number is not None:
                meta[meta_key] = number
                break
    return config, state, meta


def import_nanogpt(path: str | Path) -> tuple[GPT, dict[str, Any]]:
    """Model (CPU, fp32, train mode) and metadata (step, val_loss when saved) of a build-nanogpt/nanoGPT ``.pt``."""
    config, state, meta = read_nanogpt(path)
    return model_from_state_dict(config, state, str(path)), meta


def load_nanogpt_checkpoint(path: str | Path) -> GPT:
    """Our GPT (CPU, fp32) with the weights of a build-nanogpt / nanoGPT ``.pt`` file, loaded safely."""
    return import_nanogpt(path)[0]
