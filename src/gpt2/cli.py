"""The ``gpt2`` command line: one subcommand per stage of the pipeline.

One pattern for every command: ``COMMANDS`` maps its name to the light ``cli`` module of the package
that owns it (``gpt2.data.cli``, ``gpt2.train.cli``, ...; ``gpt2.info`` is a one-module command), which
defines ``add_<name>_arguments(parser)`` and ``run_<name>(args) -> int``. A cli module imports torch and
the heavy code only inside ``run_<name>``, and only the module of the command being run is imported, so
``gpt2 --help`` and ``gpt2 CMD --help`` (all but ``serve``) never load torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from gpt2.errors import GPT2Error

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("gpt2.data.cli", "tokenize a corpus (FineWeb-Edu, local files, the demo corpus) into shards"),
    "train": ("gpt2.train.cli", "train a GPT-2 (single process or under torchrun)"),
    "eval": ("gpt2.evaluate.cli", "evaluate a model: HellaSwag or validation loss"),
    "sample": ("gpt2.generate.cli", "generate text from a prompt"),
    "serve": ("gpt2.serve.cli", "serve a model: OpenAI-compatible API and web page"),
    "import": ("gpt2.interop.cli", "import weights from Hugging Face or a nanoGPT/build-nanogpt .pt file"),
    "export": ("gpt2.interop.cli", "export a model to Hugging Face or GGUF (llama.cpp)"),
    "info": ("gpt2.info", "show the config, parameter count and metadata of a checkpoint or size"),
    "plot": ("gpt2.report.cli", "plot loss, learning rate, throughput and evaluations of training runs"),
    "report": ("gpt2.report.cli", "write a Markdown summary of a training run"),
}

# Old spellings still accepted, with a one-line note: --dtype was autocast in train/eval, the weights' dtype elsewhere.
RENAMED = {
    "--dtype": {"train": "--autocast", "eval": "--autocast", "sample": "--weights-dtype", "serve": "--weights-dtype"}
}


def _selected_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the ``selected`` subcommand gets its full arguments (imports its module)."""
    parser = argparse.ArgumentParser(
        prog="gpt2", description="GPT-2 from scratch: prepare data, train, evaluate, sample and serve."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    from gpt2 import __version__

    parser.add_argument("--version", action="version", version=f"gpt2-from-scratch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = importlib.import_module(module_name)
            getattr(module, f"add_{name}_arguments")(cmd)
            cmd.set_defaults(_run=getattr(module, f"run_{name}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpt2`` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        command = _selected_command(argv)
        for i, arg in enumerate(argv):
            old, equals, value = arg.partition("=")
            if new := RENAMED.get(old, {}).get(command or ""):
                print(f"note: {old} is now {new} for gpt2 {command} (the old spelling still works)", file=sys.stderr)
                argv[i] = new + equals + value
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except GPT2Error as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full or read-only disk anywhere: one line naming the disk, never a traceback
        from gpt2.store.files import write_error

        if debug:
            traceback.print_exc()
        where = exc.filename or "."
        print(f"error: writing {where} failed: {write_error(exc, where)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
