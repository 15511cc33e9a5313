"""The doc examples marked runnable work: every ```bash / ```python block of README.md and docs/*.md that follows
a line ``<!-- runnable -->`` runs, offline, against a tiny model made by the demo's own commands (runs/demo/data
and runs/demo/run in a temporary directory, the working directory of every example). A renamed option, a wrong
path or a shell-quoting slip in a marked example fails here. Mark only examples that need no network, no GPU and
no server, and take seconds; a marked shell block holds ``gpt2`` commands only.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from gpt2.cli import main
from tools.demo import train_argv

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
BLOCK = re.compile(r"^<!-- runnable -->\n```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def runnable_blocks() -> list:
    params = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        assert text.count(MARKER) == len(BLOCK.findall(text)), f"{doc.name}: a {MARKER} line not before a block"
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 3  # the block's first line of code
            params.append(pytest.param(match[1], match[2], id=f"{doc.relative_to(ROOT)}:{line}"))
    return params


BLOCKS = runnable_blocks()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """runs/demo/data and runs/demo/run as `make demo` makes them, at a tiny budget (40K tokens, 4 steps)."""
    base = tmp_path_factory.mktemp("docs")
    data, run = base / "runs" / "demo" / "data", base / "runs" / "demo" / "run"
    assert (
        main(["prepare", "demo", "--out", str(data), "--max-tokens", "40000", "--val-tokens", "8192", "--quiet"]) == 0
    )
    assert main([*train_argv(data, run, 4, 1024, None, 0), "--log-every", "0"]) == 0
    return base


def test_the_docs_have_runnable_examples():
    docs = {param.id.split(":")[0] for param in BLOCKS}
    assert len(BLOCKS) >= 6 and {"README.md", "docs/generation.md"} <= docs


def gpt2_commands(code: str) -> list[list[str]]:
    """The argv of each ``gpt2`` command of a shell block, as bash itself expands it (quotes, ``$'\\n'``, ...):
    bash runs the block with ``gpt2`` defined to print its arguments, so a quoting slip fails as it would."""
    script = "gpt2() { printf '%s\\0' \"$@\"; printf '\\1\\0'; }\n" + code
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, f"bash: exit {result.returncode}: {result.stderr}"
    commands, argv = [], []
    for word in result.stdout.split("\0")[:-1]:
        if word == "\1":
            commands.append(argv)
            argv = []
        else:
            argv.append(word)
    return commands


@pytest.mark.parametrize("language, code", BLOCKS)
def test_doc_example_runs(language, code, demo_dir, monkeypatch, capsys, one_torch_thread):
    """Python blocks run as they are; shell blocks run their ``gpt2`` commands in this process (the real CLI,
    without paying a process start and a torch import per command), in order, each of which must succeed."""
    monkeypatch.chdir(demo_dir)
    if language == "python":
        exec(compile(code, "<doc example>", "exec"), {"__name__": "__doc_example__"})
        return
    commands = gpt2_commands(code)
    assert commands, "a runnable shell block without a gpt2 command"
    for argv in commands:
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse rejected the command line
            status = exc.code
        assert status == 0, f"gpt2 {shlex.join(argv)}: exit {status}\n{capsys.readouterr().err[-2000:]}"
