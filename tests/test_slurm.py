"""scripts/slurm/train.sbatch stays true: valid bash, and its torchrun line parses with torchrun's and our parser."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gpt2.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm" / "train.sbatch"


def torchrun_command(script: str) -> list[str]:
    """The words of the script's ``torchrun ...`` command (continuations joined, ``&`` and ``"$@"`` dropped)."""
    joined = script.replace("\\\n", " ")
    lines = [line for line in joined.splitlines() if re.search(r"\btorchrun --", line)]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0], comments=True)
    words = words[words.index("torchrun") + 1 :]
    return [w for w in words if w not in ("&", "$@")]


def test_script_is_valid_bash():
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sbatch_header_asks_for_requeue_and_an_early_sigterm():
    header = [shlex.split(line)[1] for line in SCRIPT.read_text().splitlines() if line.startswith("#SBATCH ")]
    options = {option.split("=")[0]: option for option in header}
    assert {"--nodes", "--ntasks-per-node", "--gpus-per-node", "--requeue", "--signal"} <= set(options)
    assert options["--signal"] == "--signal=B:TERM@120" and options["--ntasks-per-node"] == "--ntasks-per-node=1"


def test_torchrun_line_parses_with_torchrun_and_gpt2_train():
    from torch.distributed.run import get_args_parser

    words = torchrun_command(SCRIPT.read_text())
    launch = get_args_parser().parse_args(words)  # torchrun's own parser: every launcher option is real
    assert launch.nnodes == "$SLURM_NNODES" and launch.nproc_per_node == "$GPUS_PER_NODE"
    assert launch.rdzv_backend == "c10d" and launch.rdzv_endpoint == "$MASTER_ADDR:$MASTER_PORT"
    assert launch.module and launch.training_script == "gpt2"
    args = build_parser("train").parse_args(launch.training_script_args)  # `gpt2 train` options
    assert args.command == "train" and args.out == "$RUN_DIR" and args.data == "$DATA" and args.size == "$SIZE"
    assert args.resume is None  # resume is automatic: a requeued job continues from RUN_DIR/latest
