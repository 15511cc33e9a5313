"""State-dict key and layout conversions shared by the Hugging Face and nanoGPT importers/exporter."""

from __future__ import annotations

from typing import Any

import torch

from gpt2.errors import GPT2Error

# Weights that HF stores as Conv1D (in, out) and we store as nn.Linear (out, in).
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Non-parameter buffers of older GPT-2 implementations (the causal mask); we build the mask on the fly.
ATTENTION_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def drop_attention_buffers(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (tensors or shapes) without the causal-mask buffers (``...attn.bias``, ``...attn.masked_bias``)."""
    return {k: v for k, v in state.items() if not k.endswith(ATTENTION_BUFFER_SUFFIXES)}


def transpose_conv1d(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The transpose is its own inverse, so the same function converts in both directions.
    return {k: v.t().contiguous() if k.endswith(CONV1D_SUFFIXES) else v for k, v in state.items()}


def transpose_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The shapes :func:`transpose_conv1d` would give tensors of these ``shapes`` (for header-only checks)."""
    return {k: tuple(reversed(v)) if k.endswith(CONV1D_SUFFIXES) else tuple(v) for k, v in shapes.items()}


def check_tied_head(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` without ``lm_head.weight``, after checking it equals the token embedding (GPT-2 ties them)."""
    head = state.get("lm_head.weight")
    state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    wte = state.get("transformer.wte.weight")
    if head is not None and wte is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
        raise GPT2Error(f"{source}: lm_head.weight differs from transformer.wte.weight; untied heads are unsupported")
    return state
