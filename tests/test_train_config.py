"""TrainConfig: the seed's defaults, option precedence, --config files and the up-front checks."""

from __future__ import annotations

import argparse
import json

import pytest

from gpt2 import GPT2Error, GPTConfig
from gpt2.train.cli import add_train_arguments, options_from_args
from gpt2.train.config import TrainConfig, build_config, read_config_file


def parse(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return options_from_args(parser.parse_args(argv))


def test_124m_defaults_are_the_seed_recipe():
    cfg = build_config({}, "cuda")
    assert cfg.model == GPTConfig.named("124M") and cfg.size == "124M"
    assert (cfg.batch_tokens, cfg.micro_batch, cfg.seq_len) == (2**19, 64, 1024)
    assert (cfg.lr, cfg.min_lr_ratio, cfg.warmup_steps, cfg.steps) == (6e-4, 0.1, 715, 19073)
    assert (cfg.weight_decay, cfg.grad_clip, cfg.beta1, cfg.beta2) == (0.1, 1.0, 0.9, 0.95)
    assert cfg.grad_accum_steps(1) == 8 and cfg.grad_accum_steps(8) == 1  # 8 GPUs: no accumulation, as the seed
    assert build_config({}, "cpu").micro_batch == 8  # a smaller micro-batch on CPU, same total batch
    assert build_config({"size": "1558M"}, "cuda").lr == 2e-4  # GPT-3 table: bigger models, smaller lr


def test_tiny_defaults_fit_its_context_window():
    cfg = build_config({"size": "tiny"}, "cpu")
    assert cfg.seq_len == 128 and cfg.grad_accum_steps(1) == 2 and cfg.grad_accum_steps(2) == 1
    cfg.validate(2)


def test_flags_override_config_file_which_overrides_size_defaults(tmp_path):
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"size": "tiny", "lr": 1e-3, "steps": 50, "model": {"n_layer": 3}}))
    options = parse(["--config", str(file), "--steps", "7", "--no-compile"])
    assert options["steps"] == 7 and options["lr"] == 1e-3 and options["compile"] is False
    cfg = build_config(options, "cpu")
    assert cfg.model == GPTConfig(block_size=128, n_layer=3, n_head=2, n_embd=64)
    assert cfg.size is None and cfg.steps == 7 and cfg.lr == 1e-3
    assert "resume" not in parse([]) and "lr" not in parse([])  # unset flags leave the decision to the defaults


def test_config_file_may_be_a_model_config_json(tmp_path):
    file = tmp_path / "config.json"
    file.write_text(
        json.dumps({"format": "gpt2-from-scratch", "format_version": 1, **GPTConfig.named("mini").to_dict()})
    )
    cfg = build_config(read_config_file(file), "cpu")
    assert cfg.model == GPTConfig.named("mini") and cfg.seq_len == 256


@pytest.mark.parametrize(
    "content, message",
    [("{", "not valid JSON"), ("[1]", "expected a JSON object"), ('{"learning_rate": 1}', "unknown option")],
)
def test_bad_config_files(tmp_path, content, message):
    file = tmp_path / "bad.json"
    file.write_text(content)
    with pytest.raises(GPT2Error, match=message):
        read_config_file(file)


def test_grad_accum_must_divide():
    cfg = TrainConfig(batch_tokens=1000, micro_batch=4, seq_len=64)
    with pytest.raises(GPT2Error, match=r"--batch-tokens 1000 is not divisible by .* = 256.*e\.g\. 1024"):
        cfg.grad_accum_steps(1)
    assert TrainConfig(batch_tokens=1024, micro_batch=4, seq_len=64).grad_accum_steps(2) == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"seq_len": 2048}, "exceeds the model's context window"),
        ({"steps": 0}, "--steps must be positive"),
        ({"lr": 0.0}, "--lr must be positive"),
        ({"min_lr_ratio": 2.0}, "--min-lr-ratio"),
        ({"keep_last": -1}, "--keep-last must be >= 0"),
        ({"peak_flops": -1.0}, "--peak-flops"),
    ],
)
def test_validate_names_the_bad_option(overrides, message):
    with pytest.raises(GPT2Error, match=message):
        build_config(overrides, "cpu").validate()


def test_unknown_size_is_an_error():
    with pytest.raises(GPT2Error, match="unknown model size 'huge'"):
        build_config({"size": "huge"}, "cpu")
