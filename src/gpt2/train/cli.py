"""``gpt2 train``: command-line options -> TrainConfig -> the training loop.

The option flags are generated from the TrainConfig fields (:mod:`gpt2.train.options`); only
``--size`` and ``--config`` are the command line's own. Every flag defaults to None so that the
precedence is explicit: a flag on the command line beats a value from ``--config FILE``, which
beats the per-size default (:data:`gpt2.train.recipes.SIZE_DEFAULTS`), which beats the TrainConfig default.
Light at import: torch loads only in :func:`run_train`.
"""

from __future__ import annotations

import argparse
from typing import Any

from gpt2.config import CONFIGS
from gpt2.train.config import OPTION_NAMES, read_config_file
from gpt2.train.options import add_option_arguments, option_groups


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    groups = option_groups(parser)
    groups["data"].add_argument(
        "--size", help=f"model size from the registry: {', '.join(CONFIGS)} (default: 124M; sets the per-size defaults)"
    )
    groups["data"].add_argument(
        "--config",
        metavar="FILE",
        help='JSON file of options (TrainConfig names, e.g. {"lr": 3e-4}) and/or a model shape (GPTConfig fields)',
    )
    add_option_arguments(groups)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``--config FILE`` values with the explicitly given flags (flags win)."""
    options: dict[str, Any] = read_config_file(args.config) if getattr(args, "config", None) else {}
    for name in ("size", *OPTION_NAMES):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


def run_train(args: argparse.Namespace) -> int:
    from gpt2.runtime.device import resolve_device
    from gpt2.train.init import resolve_config
    from gpt2.train.trainer import train

    options = options_from_args(args)
    device_type = resolve_device(options.get("device", "auto")).type
    config, init = resolve_config(options, device_type)  # loads --init-from weights (read-only)
    train(config, init=init)
    return 0
