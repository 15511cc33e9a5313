"""Lazy re-exports for package ``__init__`` modules: names resolve on first use, not at import.

``import gpt2`` or ``gpt2 --help`` must not pay ~1 s for torch. A package lists what it re-exports once, as
an explicit table (module -> the names it gives), and ends with::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"gpt2.model": ("GPT",), "gpt2.store.load": ("load",)})

The first look-up of a name (``gpt2.GPT``, ``from gpt2.generate import generate``) imports its module;
type checkers see the names as ``Any`` (the ``__getattr__``'s return type).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, table: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Module ``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, which re-exports ``table``'s names."""
    module = sys.modules[package]
    exports = {name: home for home, names in table.items() for name in names}

    def __getattr__(name: str) -> Any:
        home = exports.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(module, name, value)  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *exports})

    return __getattr__, __dir__, list(exports)
