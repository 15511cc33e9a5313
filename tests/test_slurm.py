"""scripts/slurm/train.sbatch stays true: valid bash, its torchrun line parses with torchrun's and our parser, and
under bash (with stand-ins for srun and scontrol) a SIGTERM is forwarded, waited for, and the job requeued."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import time
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


def fake_command(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("signalled", [False, True])
def test_sigterm_is_forwarded_then_the_job_requeued(tmp_path, signalled):
    """The script under bash with stand-ins for srun and scontrol: SIGTERM reaches srun, then `scontrol requeue`."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # srun: record the command, then "train" until SIGTERM, which takes a moment to "save" (the script must wait)
    srun = f"""echo "srun $*" >> {log}
trap 'sleep 0.5; echo saved >> {log}; exit 0' TERM
touch {tmp_path}/started
for i in $(seq 20); do sleep 0.1; done
echo finished >> {log}
"""
    fake_command(bin_dir, "srun", srun)
    scontrol = f"""if [ "$1" = show ]; then printf "node-a\\nnode-b\\n"; else echo "scontrol $*" >> {log}; fi
"""
    fake_command(bin_dir, "scontrol", scontrol)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "SLURM_JOB_ID": "42", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "node-[a-b]"}  # fmt: skip
    process = subprocess.Popen(
        ["bash", str(SCRIPT), "--steps", "10"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if signalled:
        for _ in range(600):  # up to 30 s on a loaded machine
            if (tmp_path / "started").exists():
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert log.is_file(), output
    calls = log.read_text().splitlines()
    assert calls[0].startswith("srun --kill-on-bad-exit=1 torchrun --nnodes=2 --nproc_per_node=8 --rdzv_id=42")
    assert "--rdzv_endpoint=node-a:29500" in calls[0] and calls[0].endswith("--save-every 500 --steps 10")
    if signalled:  # forwarded, the "save" waited for, then requeued
        assert calls[1:] == ["saved", "scontrol requeue 42"] and process.returncode == 0, (calls, output)
    else:
        assert calls[1:] == ["finished"] and process.returncode == 0, (calls, output)
