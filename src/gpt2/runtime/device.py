"""Devices and precision: ``--device`` and ``--autocast`` as every command reads them, and autocast.

``resolve_device`` turns a user's ``--device`` into a torch.device (``auto`` picks cuda > mps > cpu);
``model_device`` is a different question, the device a model's weights are already on.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from gpt2.errors import GPT2Error

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}  # --autocast -> autocast dtype


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``--device`` as a torch.device: ``auto`` -> cuda > mps > cpu; ``cuda`` under torchrun -> ``cuda:LOCAL_RANK``.

    Raises GPT2Error naming ``--device`` for a device that is not a device or not on this machine.
    """
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            spec = "mps"
        else:
            spec = "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise GPT2Error(f"--device {spec!r} is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GPT2Error(f"--device {spec}: CUDA is not available in this PyTorch build / machine")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise GPT2Error(f"--device cuda:{index}: only {torch.cuda.device_count()} GPU(s) visible")
        device = torch.device("cuda", index)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise GPT2Error("--device mps: Apple MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise GPT2Error(f"--device {spec!r}: only cpu, cuda and mps are supported")
    return device


def model_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` as a torch.device when given, else where ``model``'s weights are (cpu for a weightless module).

    The optional ``device`` is for APIs whose ``device=None`` means "wherever the model is".
    """
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def resolve_amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    """``--autocast`` as an autocast dtype; None means no autocast (full fp32).

    ``auto`` = bf16 on CUDA GPUs that have it, fp16 on older ones, fp32 on CPU/MPS. Weights and
    optimizer state stay fp32 either way; autocast only runs matmuls in the low precision.
    """
    if spec == "auto":
        if device.type != "cuda":
            return None  # CPU bf16 autocast is slower than fp32 on most CPUs; MPS support is partial
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if spec not in AMP_DTYPES:
        raise GPT2Error(f"--autocast {spec!r}: use one of auto, {', '.join(AMP_DTYPES)}")
    if spec == "fp16" and device.type != "cuda":
        raise GPT2Error("--autocast fp16 needs a CUDA GPU (use bf16 or fp32 on this device)")
    return AMP_DTYPES[spec]


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; a no-op context for None or float32 (full precision)."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
