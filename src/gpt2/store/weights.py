"""What a model's weights must look like, checked from names, shapes and dtypes alone (no torch, no modules).

A config from a file is untrusted: ``n_layer: 1000000`` would have us build a million modules (minutes,
gigabytes) before noticing the weights do not match. So every loader first compares the weights'
names/shapes/dtypes — for safetensors read from the file header only — with :func:`expected_shapes`
of the config, and builds the model only when they agree. ``gpt2 info`` counts parameters the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error

TIED_KEY = "lm_head.weight"  # alias of transformer.wte.weight, stored once
# safetensors dtype names of floating-point weights; int/bool tensors are never model weights.
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")

Shapes = dict[str, tuple[int, ...]]


def expected_shapes(config: GPTConfig) -> Shapes:
    """Name -> shape of every weight of :class:`gpt2.model.GPT` with ``config`` (without the tied lm_head)."""
    C, V = config.n_embd, config.vocab_size
    shapes: Shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (config.block_size, C)}
    block = {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (3 * C, C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (4 * C, C), "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (C, 4 * C), "mlp.c_proj.bias": (C,),
    }  # fmt: skip
    for layer in range(config.n_layer):
        shapes.update({f"transformer.h.{layer}.{name}": shape for name, shape in block.items()})
    shapes.update({"transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)})
    return shapes


def check_shapes(got: Shapes, config: GPTConfig, source: str) -> None:
    """Raise a GPT2Error naming ``source`` unless ``got`` has exactly the weights ``config`` needs.

    Compares the names first (a config whose n_layer disagrees with the stored blocks fails here, before
    :func:`expected_shapes` lists a million layers), then each shape.
    """
    got = {k: tuple(v) for k, v in got.items() if k != TIED_KEY}
    blocks = {k.split(".")[2] for k in got if k.startswith("transformer.h.")}
    if len(blocks) != config.n_layer:
        raise GPT2Error(f"{source}: the config says n_layer={config.n_layer} but the weights hold {len(blocks)} blocks")
    expected = expected_shapes(config)
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise GPT2Error(
            f"{source}: weights do not match the config "
            f"(missing: {missing[:3] or 'none'}, unexpected: {unexpected[:3] or 'none'})"
        )
    for key, shape in expected.items():
        if got[key] != shape:
            raise GPT2Error(f"{source}: {key} has shape {list(got[key])}, config needs {list(shape)}")


def check_float_dtypes(dtypes: dict[str, str], source: str) -> None:
    """Raise a GPT2Error unless every weight is floating point (``dtypes``: name -> safetensors/torch dtype name)."""
    for key, dtype in dtypes.items():
        name = dtype.upper().removeprefix("TORCH.")
        if name not in FLOAT_DTYPES and name not in ("FLOAT64", "FLOAT32", "FLOAT16", "BFLOAT16"):
            raise GPT2Error(f"{source}: {key} is stored as {dtype}; model weights must be floating point")


def safetensors_header(file: str | Path) -> tuple[Shapes, dict[str, str]]:
    """(name -> shape, name -> dtype) of a safetensors file, read from its header only (no tensor data)."""
    from safetensors import SafetensorError, safe_open

    file = Path(file)
    if not file.is_file():
        raise GPT2Error(f"missing weights file: {file}")
    try:
        with safe_open(str(file), framework="numpy") as f:
            slices = {key: f.get_slice(key) for key in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
            return {k: tuple(s.get_shape()) for k, s in slices.items()}, {k: s.get_dtype() for k, s in slices.items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise GPT2Error(f"corrupt weights file {file}: {exc}") from None


def check_safetensors(file: str | Path, config: GPTConfig) -> Shapes:
    """Check a weights file's header against ``config`` (names, shapes, float dtypes); returns its shapes."""
    shapes, dtypes = safetensors_header(file)
    check_float_dtypes(dtypes, str(file))
    check_shapes(shapes, config, str(file))
    return shapes


def count_parameters(shapes: Shapes) -> int:
    """Distinct parameters of weights with these shapes (the tied lm_head counted once, with the embedding)."""
    return sum(math.prod(shape) for key, shape in shapes.items() if key != TIED_KEY)
