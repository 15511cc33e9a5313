"""The ``gpt2 train`` options, generated from the ``TrainConfig`` fields: argparse flags and their ``--help``.

One source: a field's annotation gives the flag's type (``bool`` -> ``--x/--no-x``), its metadata the help,
group, choices and how to show its default. Every flag defaults to ``None`` (= not given), so that
``build_config`` can apply the precedence recipe < ``--config`` file < flag. tools/docs_options.py writes
the same options into docs/training.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from gpt2.train.config import FIELDS, OPTION_NAMES, option_name, option_type
from gpt2.train.recipes import RECIPES, fine_tune

# group key (field metadata "group") -> title in --help and the docs
GROUPS = {
    "data": "model and data",
    "optim": "optimisation (defaults: the GPT-2 124M recipe)",
    "hardware": "hardware",
    "loop": "evaluation, sampling and checkpoints (every N steps, 0 = never)",
}
# the options whose value some recipe (or its fine-tuning, on a GPU or a CPU) sets to other than the default
_CONFIGS = [recipe() for recipe in RECIPES.values()]
_CONFIGS += [fine_tune(c, c.model, device) for c in _CONFIGS for device in ("cuda", "cpu")]
RECIPE_OPTIONS = {name for c in _CONFIGS for name in OPTION_NAMES if getattr(c, name) != FIELDS[name].default}


def format_value(value: Any) -> str:
    """A value as --help and the docs show it: 6e-4, 524,288, on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, float) and 0 < abs(value) < 0.01:  # 6e-4, 2.5e-4: as the papers write learning rates
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:.1f}" if value.is_integer() else f"{value:g}"
    return str(value)


def default_text(name: str) -> str:
    """How the default of option ``name`` reads in --help and the docs (``6e-4, per recipe``): the 124M recipe's."""
    if "default_text" in FIELDS[name].metadata:
        return FIELDS[name].metadata["default_text"]
    text = format_value(FIELDS[name].default)
    return f"{text}, per recipe" if name in RECIPE_OPTIONS else text


def help_text(name: str) -> str:
    """The one-line help of option ``name`` with its default, as ``gpt2 train --help`` shows it."""
    return f"{FIELDS[name].metadata['help']} (default: {default_text(name)})"


def option_groups(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """The argument groups of ``gpt2 train``, by key of :data:`GROUPS`."""
    return {key: parser.add_argument_group(title) for key, title in GROUPS.items()}


def add_option_arguments(groups: dict[str, argparse._ArgumentGroup]) -> None:
    """One flag per TrainConfig option, into its group; every flag defaults to None (= not given)."""
    for name in OPTION_NAMES:
        metadata = FIELDS[name].metadata
        kind, _ = option_type(name)
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text(name).replace("%", "%%")}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if "choices" in metadata:
                kwargs["choices"] = metadata["choices"]  # argparse shows them as {a,b,c}
            elif "metavar" in metadata:
                kwargs["metavar"] = metadata["metavar"]
        groups[metadata["group"]].add_argument(option_name(name), **kwargs)
