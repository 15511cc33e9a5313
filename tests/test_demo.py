"""The `make demo` pipeline end to end at a tiny budget: prepare → train → evaluate → report → sample → serve."""

from __future__ import annotations

import json

import pytest

from gpt2 import GPT2Error
from tools.demo import DEMO_MICRO_BATCH, DEMO_SEQ_LEN, find_hellaswag, hellaswag_hint, main, run_demo, train_argv

pytestmark = pytest.mark.slow


def test_demo_end_to_end_and_rerun_reuses_everything(tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "demo"
    args = ["--out", str(out), "--steps", "4", "--data-max-tokens", "40000", "--eval-tokens", "1024", "--no-download"]
    assert main([*args, "--hellaswag-limit", "4"]) == 0
    printed = capsys.readouterr().out

    data_dir, run_dir = out / "data", out / "run"
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert {s["split"] for s in manifest["shards"]} == {"train", "val"}
    assert (run_dir / "latest").read_text().strip() == "step_000004"
    assert (run_dir / "step_000004" / "model.safetensors").is_file()

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["type"] == "train"]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.3  # from ~10.9 (uniform over 50K tokens) clearly down
    assert any(r["type"] == "eval" and r["step"] == 4 and "val_loss" in r for r in rows)
    assert any(r["type"] == "sample" for r in rows)

    image = matplotlib.image.imread(run_dir / "plot.png")
    assert image.shape[0] > 500 and image.shape[1] > 800
    report = (run_dir / "report.md").read_text()
    assert "](plot.png)" in report and "| final val loss |" in report and "## Samples at step 4" in report

    # Every stage printed the gpt2 command it ran; samples follow the prompt; the last line says how to serve.
    for command in ("$ gpt2 prepare demo", "$ gpt2 train --size tiny", "$ gpt2 report", "$ gpt2 sample --model"):
        assert command in printed
    assert printed.count("--- sample ") == 3 and "ROMEO:" in printed
    assert printed.rstrip().splitlines()[-1].strip() == f"gpt2 serve --model {run_dir}"

    # Re-running reuses the dataset and the finished run: no new training rows, same checkpoint.
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    result = run_demo(out, steps=4, data_max_tokens=40000, eval_tokens=1024, num_samples=1, allow_download=False)
    assert "already trained to step 4: not retraining" in capsys.readouterr().out
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before
    assert result["serve_command"] == f"gpt2 serve --model {run_dir}"
    assert result["val_loss"] < 10.8


def test_train_command_skips_hellaswag_without_data(tmp_path):
    offline = train_argv(tmp_path / "d", tmp_path / "r", 300, 16384, None, 200)
    assert offline[offline.index("--hellaswag-every") + 1] == "0" and "--hellaswag-path" not in offline
    online = train_argv(tmp_path / "d", tmp_path / "r", 300, 16384, tmp_path / "hs.jsonl", 200)
    assert online[online.index("--hellaswag-every") + 1] == "300" and str(tmp_path / "hs.jsonl") in online


def test_train_command_is_the_measured_recipe(tmp_path):
    from gpt2.cli import build_parser
    from gpt2.train.cli import options_from_args

    argv = train_argv(tmp_path / "d", tmp_path / "r", 1000, 16384, None, 200)
    options = options_from_args(build_parser("train").parse_args(argv))
    assert options["fused_loss"] is True  # the demo's fastest CPU setting; `gpt2 train` keeps it off by default
    assert options["batch_tokens"] == DEMO_MICRO_BATCH * DEMO_SEQ_LEN == 512  # one micro-batch per step
    assert options["warmup_steps"] == 66 and options["eval_every"] == 200
    assert options["recipe"] == "muon" and options["lr"] == 6e-3  # measured: 5.856 vs AdamW's 6.0135 at 1,000 steps


def test_offline_hint_names_the_file_and_a_real_command(tmp_path):
    from gpt2.cli import build_parser

    hint = hellaswag_hint(tmp_path / "run")
    assert "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl" in hint
    command = hint.split("score the model with: gpt2 ")[1].split()
    args = build_parser(command[0]).parse_args(command)  # the printed command parses with the real CLI
    assert args.model == str(tmp_path / "run")


def test_bad_steps_is_one_error_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--steps", "0"]) == 1
    assert capsys.readouterr().err.strip() == "error: --steps must be >= 1, got 0"


def test_hellaswag_file_comes_from_the_option_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_CACHE_DIR", str(tmp_path / "cache"))  # no cached official file
    given, from_env = tmp_path / "given.jsonl", tmp_path / "env.jsonl"
    given.write_text("{}\n"), from_env.write_text("{}\n")
    monkeypatch.setenv("GPT2_HELLASWAG_PATH", str(from_env))
    assert find_hellaswag(False, given) == (given, f"HellaSwag val from {given}")
    assert find_hellaswag(False)[0] == from_env
    with pytest.raises(GPT2Error, match="--hellaswag-path .*nope.jsonl: file not found"):
        find_hellaswag(False, tmp_path / "nope.jsonl")
    monkeypatch.setenv("GPT2_HELLASWAG_PATH", str(tmp_path / "missing.jsonl"))
    with pytest.raises(GPT2Error, match=r"\$GPT2_HELLASWAG_PATH is '.*missing.jsonl', which is not a file"):
        find_hellaswag(False)
    monkeypatch.setenv("GPT2_HELLASWAG_PATH", "")  # what make sets when there is no developer copy
    path, note = find_hellaswag(False)
    assert path is None and "HellaSwag skipped" in note and "GPT2_HELLASWAG_PATH" in note
