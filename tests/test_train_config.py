"""TrainConfig: the seed's defaults, option precedence, --config files, the up-front checks, and the flags,
help and docs table generated from its fields."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from gpt2 import GPT2Error, GPTConfig
from gpt2.config import CONFIGS
from gpt2.train.cli import add_train_arguments, options_from_args
from gpt2.train.config import (
    FIELDS,
    OPTION_NAMES,
    TrainConfig,
    build_config,
    option_name,
    option_type,
    read_config_file,
)
from gpt2.train.options import GROUPS, markdown_tables, update_markdown
from gpt2.train.options import main as options_main
from gpt2.train.recipes import SIZE_DEFAULTS


def parse(argv: list[str]) -> dict:
    return options_from_args(train_parser().parse_args(argv))


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


# -- the options come from one source: the TrainConfig fields -------------------------------------------------


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser


def test_every_option_field_is_a_flag_with_help():
    actions = {a.dest: a for a in train_parser()._actions if a.dest != "help"}
    # documented exceptions: `model` (set by --size / a --config model shape) and `size` (the CLI's own --size)
    assert set(FIELDS) - set(OPTION_NAMES) == {"model", "size"}
    assert set(actions) == {*OPTION_NAMES, "size", "config"}
    for name in OPTION_NAMES:
        action, metadata = actions[name], FIELDS[name].metadata
        assert action.option_strings[0] == option_name(name) == "--" + name.replace("_", "-")
        assert action.default is None, name  # not given = decided later (precedence)
        assert metadata["help"].strip() and metadata["group"] in GROUPS, name
        assert action.help.startswith(metadata["help"]) and "(default: " in action.help, name
        kind, optional = option_type(name)
        if kind is bool:
            assert isinstance(action, argparse.BooleanOptionalAction) and "--no-" + name.replace("_", "-") in (
                action.option_strings
            )
        else:
            assert action.type is kind, name
        if optional:  # `X | None` fields default to None and say what None means
            assert FIELDS[name].default is None and metadata.get("default_text"), name


def test_bool_and_typed_flags_parse():
    options = parse(["--fsdp", "--no-shuffle", "--lr", "3e-4", "--steps", "12", "--autocast", "bf16"])
    assert options == {"fsdp": True, "shuffle": False, "lr": 3e-4, "steps": 12, "autocast": "bf16"}
    assert type(options["lr"]) is float and type(options["steps"]) is int


def test_size_defaults_are_typed_and_cover_the_registry():
    assert set(SIZE_DEFAULTS) == set(CONFIGS)
    # the 124M recipe is the TrainConfig default, so "default" in --help and the docs is right for --size 124M
    gpu = SIZE_DEFAULTS["124M"].options("cuda")
    assert all(FIELDS[name].default == value for name, value in gpu.items()), gpu
    assert SIZE_DEFAULTS["tiny"].options("cpu") == dict(
        lr=3e-3, batch_tokens=2**12, micro_batch=16, steps=200, warmup_steps=20, eval_every=50
    )
    assert SIZE_DEFAULTS["350M"].options("mps")["micro_batch"] == 4


def test_docs_options_table_is_generated_from_train_config():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    tables = markdown_tables()
    assert tables in docs, "docs/training.md is stale: run python -m gpt2.train.options --update docs/training.md"
    assert update_markdown(docs) == docs
    for name in OPTION_NAMES:
        assert f"| `{option_name(name)}`" in tables, name
    assert "| `--lr` | 6e-4, per --size; 6e-5 with --init-from | peak learning rate |" in tables


def test_options_script_prints_the_tables(capsys):
    assert options_main(["--markdown"]) == 0
    assert capsys.readouterr().out.strip() == markdown_tables()


@pytest.mark.parametrize(
    "content, message",
    [
        ({"lr": "abc"}, "--lr must be a number, got 'abc'"),
        ({"steps": 1.5}, "--steps must be an integer, got 1.5"),
        ({"steps": True}, "--steps must be an integer, got True"),
        ({"shuffle": 1}, "--shuffle must be true or false, got 1"),
        ({"data": 3}, "--data must be a string, got 3"),
        ({"autocast": "int8"}, "--autocast must be one of auto, bf16, fp16, fp32, got 'int8'"),
        ({"model": [1]}, '"model" must be an object'),
    ],
)
def test_config_file_values_are_type_checked(tmp_path, content, message):
    file = tmp_path / "typed.json"
    file.write_text(json.dumps(content))
    with pytest.raises(GPT2Error) as info:
        read_config_file(file)
    assert str(info.value).startswith(f"--config {file}: ") and message in str(info.value)


def test_config_file_int_for_float_and_null_are_accepted(tmp_path):
    file = tmp_path / "ok.json"
    file.write_text(json.dumps({"lr": 1, "hellaswag_every": None, "size": "tiny"}))
    options = read_config_file(file)
    assert options == {"lr": 1.0, "hellaswag_every": None, "size": "tiny"} and type(options["lr"]) is float
    assert build_config(options, "cpu").hellaswag_interval == 50  # null = the default (eval_every of tiny)


FLOAT_OPTIONS = [name for name in OPTION_NAMES if option_type(name)[0] is float]


@pytest.mark.parametrize("name", FLOAT_OPTIONS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_are_rejected(name, value):
    with pytest.raises(GPT2Error, match=f"{option_name(name)} must be a finite number"):
        build_config({"size": "tiny", name: value}, "cpu").validate()


def test_non_finite_from_a_flag_and_from_json(tmp_path):
    with pytest.raises(GPT2Error, match="--lr must be a finite number, got nan"):
        build_config(parse(["--size", "tiny", "--lr", "nan"]), "cpu").validate()
    file = tmp_path / "inf.json"
    file.write_text('{"grad_clip": Infinity}')  # Python's json reads the non-standard literal
    with pytest.raises(GPT2Error, match="--grad-clip must be a finite number, got inf"):
        read_config_file(file)


@pytest.mark.parametrize(
    "name, value",
    [("lr", -1), ("steps", 0), ("keep_last", -2), ("min_lr_ratio", 1.5), ("batch_tokens", 100), ("seq_len", 4096)],
)
def test_validation_message_is_the_same_for_a_flag_and_a_config_file(tmp_path, name, value):
    def message(argv: list[str]) -> str:
        with pytest.raises(GPT2Error) as info:
            build_config(parse(["--size", "tiny", *argv]), "cpu").validate()
        return str(info.value)

    file = tmp_path / "options.json"
    file.write_text(json.dumps({name: value}))
    from_flag, from_file = message([option_name(name), str(value)]), message(["--config", str(file)])
    assert from_flag == from_file and from_flag.startswith(option_name(name))
