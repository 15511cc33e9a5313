"""Tensors on disk: safetensors files read with clear errors, the checks weights pass, and tensor trees.

**Weights checks.** A config from a file is untrusted: ``n_layer: 1000000`` would have us build a million
modules (minutes, gigabytes) before noticing the weights do not match. So every loader first compares the
weights' names/shapes/dtypes — for safetensors read from the file header only — with :func:`expected_shapes`
of the config, and builds the model only when they agree. ``gpt2 info`` counts parameters the same way.

**Tensor trees.** Optimizer and RNG states are nested dicts/lists of tensors and JSON scalars
(``optimizer.state_dict()`` has int keys). ``torch.save`` would pickle them, and loading a pickle can run
code; here the tensors go into ``NAME.safetensors`` (keys "0", "1", ...) and the structure into ``NAME.json``::

    {"__dict__": [[key, value], ...]}        a dict (keys may be any scalar: int keys survive)
    {"__list__": [...], "tuple": false}      a list, or a tuple when "tuple" is true
    {"__tensor__": "7"}                      tensor "7" of the safetensors file
    3, 1.5, "x", true, null                  scalars as themselves

They are written into a directory that its caller renames into place (``gpt2.store.files.atomic_directory``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from gpt2.config import GPTConfig
from gpt2.errors import GPT2Error
from gpt2.store.files import read_json, write_json_atomic

TIED_KEY = "lm_head.weight"  # alias of transformer.wte.weight, stored once
# dtype names of floating-point weights (safetensors' and torch's); int/bool tensors are never model weights.
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "FLOAT64", "FLOAT32", "FLOAT16", "BFLOAT16")
SPARSE_MIN_BYTES = 2**20  # smaller files are not checked for holes (block rounding)

Shapes = dict[str, tuple[int, ...]]


# ---------------------------------------------------------------- safetensors files


@contextlib.contextmanager
def _reading(file: str | Path) -> Iterator[str]:
    """Open-for-reading guard: a missing, corrupt or sparse safetensors file is a GPT2Error naming it.

    safetensors checks that the header's offsets cover the file exactly; a sparse file (``truncate`` to any size)
    passes that while holding nothing, and loading it would allocate all of it: a 16 KB file can promise 16 GB.
    """
    if not Path(file).is_file():
        raise GPT2Error(f"missing weights file: {file}")
    size, on_disk = Path(file).stat().st_size, Path(file).stat().st_blocks * 512
    if size > SPARSE_MIN_BYTES and 0 < on_disk < size // 2:  # 0: a file system that does not count blocks
        raise GPT2Error(
            f"{file}: only {on_disk / 1e6:.1f} MB of its {size / 1e9:.1f} GB are on disk (a sparse file, not saved "
            "weights); refusing to load it"
        )
    try:
        yield str(file)
    except (SafetensorError, OSError, ValueError) as exc:
        raise GPT2Error(f"corrupt weights file {file}: {exc}") from None


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (on the CPU), with a clear error when it is missing or corrupt."""
    with _reading(file) as name:
        return load_file(name)


def safetensors_metadata(file: str | Path) -> dict[str, str]:
    """The free-form ``__metadata__`` of a safetensors file's header ({} when it has none)."""
    with _reading(file) as name, safe_open(name, framework="numpy") as f:
        return f.metadata() or {}


def safetensors_header(file: str | Path) -> tuple[Shapes, dict[str, str]]:
    """(name -> shape, name -> dtype) of a safetensors file, read from its header only (no tensor data)."""
    with _reading(file) as name, safe_open(name, framework="numpy") as f:
        slices = {key: f.get_slice(key) for key in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        return {k: tuple(s.get_shape()) for k, s in slices.items()}, {k: s.get_dtype() for k, s in slices.items()}


# ---------------------------------------------------------------- what a model's weights must look like


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


def count_parameters(shapes: Shapes) -> int:
    """Distinct parameters of weights with these shapes (the tied lm_head counted once, with the embedding)."""
    return sum(math.prod(shape) for key, shape in shapes.items() if key != TIED_KEY)


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
        if dtype.upper().removeprefix("TORCH.") not in FLOAT_DTYPES:
            raise GPT2Error(f"{source}: {key} is stored as {dtype}; model weights must be floating point")


def check_safetensors(file: str | Path, config: GPTConfig) -> Shapes:
    """Check a weights file's header against ``config`` (names, shapes, float dtypes); returns its shapes."""
    shapes, dtypes = safetensors_header(file)
    check_float_dtypes(dtypes, str(file))
    check_shapes(shapes, config, str(file))
    return shapes


def check_finite(
    state: dict[str, torch.Tensor], source: str, why: str = "the model diverged or the file is corrupt"
) -> None:
    """Raise a GPT2Error naming ``source`` and the first tensor of ``state`` holding a NaN or infinity."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise GPT2Error(f"{source}: {key} holds NaN/inf values ({why})")


# ---------------------------------------------------------------- tensor trees


def save_tensor_tree(directory: str | Path, name: str, tree: Any) -> None:
    """Save ``tree`` (nested dicts/lists/tuples of tensors and JSON scalars) as ``name.safetensors`` + ``name.json``.

    Tensors are copied to the CPU, contiguous. Anything else (an object, a set) is a TypeError.
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
    save_file(tensors, str(Path(directory) / f"{name}.safetensors"))
    write_json_atomic(Path(directory) / f"{name}.json", skeleton)


def load_tensor_tree(directory: str | Path, name: str) -> Any:
    """The tree that :func:`save_tensor_tree` saved as ``name`` in ``directory`` (tensors on the CPU)."""
    skeleton_file = Path(directory) / f"{name}.json"
    if not skeleton_file.is_file():
        raise GPT2Error(f"checkpoint {directory} is missing {skeleton_file.name}")
    skeleton = read_json(skeleton_file, "tensor tree")
    tensors = read_safetensors(Path(directory) / f"{name}.safetensors")

    def decode(node: Any) -> Any:
        if isinstance(node, dict):
            if "__tensor__" in node:
                try:
                    return tensors[node["__tensor__"]]
                except KeyError:
                    raise GPT2Error(f"corrupt tensor tree {skeleton_file}: no tensor {node['__tensor__']!r}") from None
            if "__dict__" in node:
                return {decode(k): decode(v) for k, v in node["__dict__"]}
            if "__list__" in node:
                items = [decode(v) for v in node["__list__"]]
                return tuple(items) if node.get("tuple") else items
        return node

    return decode(skeleton)
