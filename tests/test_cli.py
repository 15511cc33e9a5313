"""The ``gpt2`` command line: help, info, and one clean ``error:`` line (exit 1, no traceback) on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2 import GPT, GPTConfig
from gpt2.cli import COMMANDS, main
from gpt2.store.checkpoint import WEIGHTS_FILE, save_model

REPO = Path(__file__).resolve().parents[1]


def gpt2_command() -> list[str]:
    """The installed console script when there is one, else ``python -m gpt2``."""
    script = Path(sys.executable).parent / "gpt2"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gpt2"]


def run_cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*gpt2_command(), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def assert_clean_error(code, err, message):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_help_lists_every_subcommand(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in [*COMMANDS, "prepare", "train", "eval", "sample", "serve", "import", "export", "plot", "info"]:
        assert f"    {name}" in result.stdout, name
    assert "    bench" not in result.stdout  # the benchmarks are a tool of the repository: python -m tools.bench


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: gpt2" in capsys.readouterr().out


def test_info_size(capsys):
    assert main(["info", "124M"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 124,475,904" in out and "n_layer=12" in out
    assert main(["info", "gpt2-xl", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == 1_557_686_400


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    return save_model(tmp_path / "ckpt", GPT(GPTConfig.named("tiny")), {"step": 300, "val_loss": 5.5})


def test_info_checkpoint(ckpt, capsys):
    assert main(["info", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "parameters: 3,327,744" in out and "step:       300" in out and "val_loss:   5.5" in out


def test_the_old_dtype_spelling_still_works_with_a_note(ckpt, capsys):
    argv = ["sample", "--model", str(ckpt), "--prompt", "Hi", "--max-new-tokens", "2", "--temperature", "0"]
    assert main([*argv, "--dtype=bf16"]) == 0  # the weights' dtype here; autocast in train and eval
    assert (
        "note: --dtype is now --weights-dtype for gpt2 sample (the old spelling still works)" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["eval", "loss", "--model", str(ckpt), "--text", "x.txt", "--dtype", "int8"])
    err = capsys.readouterr().err
    assert "note: --dtype is now --autocast for gpt2 eval" in err and "argument --autocast: invalid choice" in err
    from gpt2.train.config import read_config_file

    (ckpt / "old.json").write_text('{"dtype": "bf16", "lr": 1e-3}')  # a --config file from before the rename
    assert read_config_file(ckpt / "old.json") == {"autocast": "bf16", "lr": 1e-3}


def test_unknown_size_and_missing_checkpoint(tmp_path, capsys):
    assert_clean_error(main(["info", "huge"]), capsys.readouterr().err, "'huge' is neither a model size")
    missing = str(tmp_path / "missing")
    assert_clean_error(main(["export", missing, "--out", str(tmp_path / "o")]), capsys.readouterr().err, "not found")


def test_corrupt_checkpoint(ckpt, tmp_path, capsys):
    (ckpt / WEIGHTS_FILE).write_bytes(b"garbage")
    code = main(["export", str(ckpt), "--out", str(tmp_path / "hf")])
    assert_clean_error(code, capsys.readouterr().err, "corrupt weights file")
    assert not (tmp_path / "hf").exists()


def test_wrong_vocab(ckpt, tmp_path, capsys):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "vocab_size": 50257}))
    code = main(["export", str(ckpt), "--out", str(tmp_path / "hf")])
    assert_clean_error(code, capsys.readouterr().err, "transformer.wte.weight has shape [50304, 64]")
    (ckpt / "config.json").write_text(json.dumps({**config, "vocab_size": 32000}))
    assert_clean_error(main(["info", str(ckpt)]), capsys.readouterr().err, "vocab_size is 32000")


def test_debug_shows_traceback(capsys):
    assert main(["--debug", "info", "huge"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("nor an existing checkpoint directory")


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pt_is_refused_by_the_cli(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model_19072.pt"
    torch.save({"model": {}, "config": Payload(marker), "step": 1}, evil)
    result = run_cli("import", "nanogpt", str(evil), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(result.returncode, result.stderr, "refusing to load")
    assert "posix.system" in result.stderr or "nt.system" in result.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


# -- a light package root: help and the error type never import torch -----------------------------------------

HELP_WITHOUT_TORCH = """
import sys
from gpt2.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("torch imported:", "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "argv",
    [[], *([name] for name in COMMANDS if name != "serve"), ["eval", "hellaswag"]],  # serve: Gradio's own imports
    ids=lambda argv: " ".join(["gpt2", *argv, "--help"]),
)
def test_help_does_not_import_torch(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-c", HELP_WITHOUT_TORCH, *argv, "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "usage: gpt2" in result.stdout, result.stderr
    assert result.stdout.rstrip().endswith("torch imported: False"), result.stdout[-300:]


def test_import_gpt2_and_errors_do_not_import_torch():
    code = "import sys, gpt2, gpt2.errors, gpt2.data, gpt2.train, gpt2.evaluate, gpt2.generate, gpt2.interop, "
    code += "gpt2.report; print(gpt2.__version__, 'torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["0.1.0", "False"], result.stderr


@pytest.mark.parametrize("package", ["gpt2", "gpt2.data", "gpt2.train", "gpt2.generate", "gpt2.interop", "gpt2.report"])
def test_lazy_exports_resolve(package):
    import importlib

    module = importlib.import_module(package)
    assert len(module.__all__) >= 2  # the package's table of exports
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None and name in dir(module), name
        home = getattr(value, "__module__", None)
        assert home is None or home.startswith("gpt2"), (name, home)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        module.nope  # noqa: B018
