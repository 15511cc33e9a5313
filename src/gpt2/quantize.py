"""Inference precision: ``--weights-dtype bf16|fp32`` (serve, sample) and ``--quantize int8`` (serve, sample, eval).

int8 is *dynamic* quantization of every ``nn.Linear`` with torch's own
``torch.ao.quantization.quantize_dynamic``: weights stored as int8 with one scale per output channel,
activations quantized on the fly per batch, int8 x int8 matmuls in fbgemm. We chose it over torchao
(0.18, which installs against torch 2.13 without pulling another torch) because on this project's CPU
(x86 with AVX-512 VNNI, torch 2.13, 1 thread) torchao's ``Int8WeightOnlyConfig`` and
``Int8DynamicActivationInt8WeightConfig`` both decoded 124M at batch 1 at 0.37x the speed of fp32
(3.5 vs 9.5 tok/s; their CPU paths dequantize before the matmul), while ``quantize_dynamic`` ran
real int8 kernels at 4.3x fp32 (41 tok/s) in the same run. `python -m tools.bench serve` figures: docs/benchmarks.md.

Tied embedding: GPT-2's ``lm_head`` shares its weight with the token embedding ``wte``. Quantizing
``lm_head`` (the largest matmul, 38.6M of 124M weights) replaces the *module* with an int8 copy, while
``wte`` keeps the original fp32 parameter for the embedding lookup — so the input embedding stays exact
and only the output projection is quantized (at the cost of keeping both copies in memory).

This module imports torch only inside functions: the ``gpt2`` CLI adds these flags without loading torch.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from gpt2.errors import GPT2Error

DTYPES = ("fp32", "bf16")
QUANTIZE_METHODS = ("int8",)


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--weights-dtype`` and ``--quantize`` options of serve and sample (eval and train autocast instead)."""
    parser.add_argument(
        "--weights-dtype", choices=DTYPES, default="fp32", help="weights and activations (default fp32)"
    )
    add_quantize_argument(parser)


def add_quantize_argument(parser: argparse.ArgumentParser) -> None:
    """``--quantize int8`` (eval, serve, sample)."""
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_METHODS,
        default=None,
        help="int8: dynamic int8 Linear layers (CPU only; faster decoding, slightly higher loss)",
    )


def prepare_model(model: Any, dtype: str = "fp32", quantize: str | None = None) -> Any:
    """``model`` (a GPT on its device) cast to ``dtype`` and, with ``quantize="int8"``, its Linear layers
    replaced by dynamic int8 ones; in eval mode. Returns the model (int8 replaces modules in a copy-free way,
    so do not keep using the original for training). GPT2Error for a combination that cannot work."""
    import torch

    from gpt2.runtime.device import model_device

    if dtype not in DTYPES:
        raise GPT2Error(f"--weights-dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if quantize is not None and quantize not in QUANTIZE_METHODS:
        raise GPT2Error(f"--quantize must be one of {', '.join(QUANTIZE_METHODS)}, got {quantize!r}")
    model = model.eval()
    device = model_device(model)
    if quantize == "int8":
        if device.type != "cpu":
            raise GPT2Error(f"--quantize int8 runs on the CPU only (fbgemm kernels); the model is on {device}")
        if dtype != "fp32":
            raise GPT2Error("--quantize int8 works on fp32 models: use it with --weights-dtype fp32")
        with warnings.catch_warnings():
            # torch marks torch.ao.quantization as deprecated in favour of torchao, whose CPU int8 is slower here.
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    if dtype == "bf16":
        if device.type == "mps":
            raise GPT2Error("--weights-dtype bf16 is not supported on mps; use fp32")
        return model.to(torch.bfloat16)
    return model


def is_quantized(model: Any) -> bool:
    """True when ``model`` holds dynamic int8 Linear layers (they cannot be trained or exported)."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
