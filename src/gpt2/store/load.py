"""``gpt2.load``: one call that loads a model from any source we support.

It sits above both our checkpoint format (``gpt2.store.checkpoint``) and the converters (``gpt2.interop``):
those never import this module, so there is no cycle between them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gpt2.errors import GPT2Error
from gpt2.interop.hf import is_local_path, load_hf_model
from gpt2.interop.nanogpt import load_nanogpt_checkpoint
from gpt2.model import GPT
from gpt2.store.checkpoint import CONFIG_FILE, find_checkpoint, load_checkpoint

TORCH_FILE_SUFFIXES = (".pt", ".pth", ".ckpt")  # nanoGPT / build-nanogpt checkpoints (read without unpickling code)


def locate(spec: str | Path) -> tuple[str, Path]:
    """What kind of model source ``spec`` is and where it is, tried in this order:

    * ``"checkpoint"``: one of our checkpoint directories (``config.json`` with our format marker), or the
      checkpoint a training run directory's ``latest`` file points to;
    * ``"hf"``: a local Hugging Face GPT-2 directory (a ``config.json`` of another format);
    * ``"pt"``: a nanoGPT / build-nanogpt ``.pt`` file (``.pth``, ``.ckpt``), read without unpickling code;
    * ``"hub"``: otherwise a Hugging Face hub name such as ``gpt2`` (needs the network or the HF cache).

    Anything else is a GPT2Error naming ``spec``.
    """
    path = Path(spec)
    if path.is_dir():
        checkpoint = find_checkpoint(path)
        if checkpoint is not None:
            return "checkpoint", checkpoint
        if (path / CONFIG_FILE).is_file():
            return "hf", path
        raise GPT2Error(f"{path} is neither a checkpoint, a run directory nor a Hugging Face model directory")
    if path.is_file():
        if path.suffix in TORCH_FILE_SUFFIXES:
            return "pt", path
        raise GPT2Error(f"{path}: unsupported model file (expected a checkpoint directory or a .pt file)")
    if path.suffix in TORCH_FILE_SUFFIXES or is_local_path(str(spec)):  # not a hub name: no 28 s of hub retries
        raise GPT2Error(f"model not found: {spec} (no such file or directory)")
    return "hub", path


def load(spec: str | Path, device: torch.device | str = "cpu") -> GPT:
    """Load a model in eval mode on ``device`` from any source :func:`locate` accepts."""
    kind, path = locate(spec)
    if kind == "checkpoint":
        return load_checkpoint(path, device)
    if kind == "pt":
        return load_nanogpt_checkpoint(path).to(device).eval()
    return load_hf_model(str(spec) if kind == "hub" else str(path), device=device)
