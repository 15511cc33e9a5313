"""Tensor trees: nested dicts/lists of tensors and JSON scalars stored as safetensors + JSON, never a pickle.

Optimizer and RNG states are such trees (``optimizer.state_dict()`` has int keys, nested dicts, lists,
floats and tensors). ``torch.save`` would pickle them, and loading a pickle can run code; here the tensors
go into ``NAME.safetensors`` (keys "0", "1", ...) and the structure into ``NAME.json``::

    {"__dict__": [[key, value], ...]}        a dict (keys may be any scalar: int keys survive)
    {"__list__": [...], "tuple": false}      a list, or a tuple when "tuple" is true
    {"__tensor__": "7"}                      tensor "7" of the safetensors file
    3, 1.5, "x", true, null                  scalars as themselves

The files are written into a directory that its caller renames into place (``gpt2.store.files.atomic_directory``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpt2.errors import GPT2Error
from gpt2.store.files import read_json, write_json


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (on the CPU), with a clear error when it is missing or corrupt."""
    file = Path(file)
    if not file.is_file():
        raise GPT2Error(f"missing weights file: {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise GPT2Error(f"corrupt weights file {file}: {exc}") from None


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
    directory = Path(directory)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    write_json(directory / f"{name}.json", skeleton)


def load_tensor_tree(directory: str | Path, name: str) -> Any:
    """The tree that :func:`save_tensor_tree` saved as ``name`` in ``directory`` (tensors on the CPU)."""
    directory = Path(directory)
    skeleton_file = directory / f"{name}.json"
    if not skeleton_file.is_file():
        raise GPT2Error(f"checkpoint {directory} is missing {skeleton_file.name}")
    skeleton = read_json(skeleton_file, "tensor tree")
    tensors = read_safetensors(directory / f"{name}.safetensors")

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
