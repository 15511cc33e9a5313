"""``gpt2 train``: command-line options -> TrainConfig -> the training loop.

The option flags are generated from the TrainConfig fields (:mod:`gpt2.train.options`); ``--recipe``,
``--size``, ``--config`` and ``--print-config`` are the command line's own. Every flag defaults to None (not
given), so that :func:`gpt2.train.recipes.build_config` applies the one precedence: recipe < ``--config``
file < flag. Light at import: torch loads only in :func:`run_train`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from gpt2.config import CONFIGS
from gpt2.train.config import OPTION_NAMES, read_config_file
from gpt2.train.options import add_option_arguments, option_groups
from gpt2.train.recipes import RECIPES


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    groups = option_groups(parser)
    groups["data"].add_argument(
        "--recipe",
        help=f"named recipe, a complete config (gpt2.train.recipes): {', '.join(RECIPES)}; gpt2 / muon with --size: "
        "that size's recipe / its -muon variant (default: --size, else the --init-from weights' size, else 124M)",
    )
    groups["data"].add_argument("--size", help=f"model size: {', '.join(CONFIGS)} (= --recipe SIZE)")
    groups["data"].add_argument(
        "--config",
        metavar="FILE",
        help='JSON file of options over the recipe (TrainConfig names, e.g. {"lr": 3e-4}) and/or a model shape',
    )
    groups["data"].add_argument(
        "--print-config", action="store_true", help="print the resolved config as JSON and exit (trains nothing)"
    )
    add_option_arguments(groups)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``--config FILE`` values with the explicitly given flags (flags win)."""
    options: dict[str, Any] = read_config_file(args.config) if getattr(args, "config", None) else {}
    for name in ("recipe", "size", *OPTION_NAMES):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


def run_train(args: argparse.Namespace) -> int:
    from gpt2.runtime.device import resolve_device
    from gpt2.train.init import resolve_config
    from gpt2.train.recipes import resolve_micro_batch
    from gpt2.train.trainer import train

    options = options_from_args(args)
    device_type = resolve_device(options.get("device", "auto")).type
    config, init = resolve_config(options, device_type)  # loads --init-from weights (read-only)
    if args.print_config:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        print(json.dumps(resolve_micro_batch(config, device_type, world_size).to_dict(), indent=2))
        return 0
    train(config, init=init)
    return 0
