"""Lazy re-exports for package ``__init__`` modules: names resolve on first use, not at import.

``import gpt2`` or ``gpt2 --help`` must not pay ~1 s for torch. A package lists what it re-exports once,
as ordinary imports under ``if TYPE_CHECKING:`` (so type checkers and IDEs see them), and ends with::

    __getattr__, __dir__, __all__ = lazy_exports(__name__)

At run time those imports never execute; :func:`lazy_exports` reads them from the package's source and
imports a submodule the first time one of its names is looked up (``gpt2.GPT``,
``from gpt2.generate import generate``).
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path


def type_checking_imports(source: str) -> dict[str, str]:
    """``{name: module}`` of the ``from MODULE import NAME`` statements under ``if TYPE_CHECKING:`` in ``source``."""
    exports: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    exports.update({alias.asname or alias.name: statement.module for alias in statement.names})
    return exports


def lazy_exports(package: str) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """Module ``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, from its ``TYPE_CHECKING`` imports."""
    module = sys.modules[package]
    exports = type_checking_imports(Path(module.__file__).read_text(encoding="utf-8"))

    def __getattr__(name: str) -> object:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        setattr(module, name, value)  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *exports})

    return __getattr__, __dir__, list(exports)
