"""Lazy re-exports for package ``__init__`` modules: names resolve on first use, not at import.

``import gpt2`` or ``gpt2 --help`` must not pay ~1 s for torch. A package lists what it re-exports
and from which submodule; the submodule is imported the first time one of its names is looked up
(``gpt2.GPT``, ``from gpt2.generate import generate``)::

    __getattr__, __dir__ = lazy_exports(__name__, {"GPT": "gpt2.model", ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Module ``__getattr__`` / ``__dir__`` for ``package`` that import ``exports[name]`` on first access."""

    def __getattr__(name: str) -> object:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
