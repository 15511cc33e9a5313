"""The README stays true: every `gpt2 ...` command it shows parses with the real argument parser.

(Running them is the job of the demo and of each command's own tests; this catches a renamed or removed
option, a wrong subcommand or a typo in the documentation.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gpt2.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Entry points that stand for a gpt2 subcommand (see the files themselves).
WRAPPERS = {"train.py": ["train"], "fineweb.py": ["prepare", "fineweb-edu"], "app.py": ["serve"]}


def shell_commands(markdown: str) -> list[str]:
    """The command lines of the ```bash blocks, backslash continuations joined, comments removed."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def gpt2_argv(command: str) -> list[str] | None:
    """The gpt2 arguments a shell command amounts to, or None when it is not a gpt2 command."""
    words = shlex.split(command)
    if words[0] == "gpt2":
        return words[1:]
    if words[0] == "torchrun":
        if "-m" in words and words[words.index("-m") + 1] == "gpt2":
            return words[words.index("-m") + 2 :]
        script = next(w for w in words[1:] if not w.startswith("-"))
        return WRAPPERS[script] + words[words.index(script) + 1 :]
    if words[0] == "python" and words[1] in WRAPPERS:
        return WRAPPERS[words[1]] + words[2:]
    if words[:3] == ["python", "-m", "tools.demo"]:
        return None  # its own parser, covered by tests/test_demo.py
    return None


def test_readme_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert lines[2:6] == ["```bash", lines[3], lines[4], "```"]
    assert lines[3].startswith("make demo") and lines[4].startswith("make test")


def _documented() -> list[str]:
    return [c for c in shell_commands(README.read_text()) if gpt2_argv(c) is not None and "--help" not in c]


def test_readme_documents_the_main_commands():
    used = {gpt2_argv(c)[0] for c in _documented()}
    assert used >= {"prepare", "train", "eval", "sample", "serve", "import", "export", "plot", "report"}


@pytest.mark.parametrize("command", _documented())
def test_readme_command_parses(command):
    argv = gpt2_argv(command)
    parser = build_parser(argv[0])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports the unknown option on stderr
        pytest.fail(f"README command does not parse (exit {exc.code}): {command}")
    assert args.command == argv[0]


def test_readme_links_point_to_existing_docs():
    for target in re.findall(r"\]\((docs/[^)#]+)", README.read_text()):
        if target != "docs/benchmarks.md" or (ROOT / target).exists():  # benchmarks.md is written by the bench suite
            assert (ROOT / target).is_file(), f"README links to missing {target}"
