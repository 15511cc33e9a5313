"""TrainConfig: the seed's defaults, the named recipes, the precedence recipe < --config file < flags, --config
files, the up-front checks, and the flags, help and docs table generated from its fields."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pytest

from gpt2 import GPT2Error, GPTConfig
from gpt2.cli import main
from gpt2.config import CONFIGS
from gpt2.train.cli import add_train_arguments, options_from_args
from gpt2.train.config import FIELDS, OPTION_NAMES, TrainConfig, option_name, option_type, read_config_file
from gpt2.train.options import GROUPS
from gpt2.train.recipes import MICRO_BATCH, RECIPES, build_config, resolve_micro_batch
from tools.docs_options import main as docs_options_main
from tools.docs_options import markdown_tables, update_markdown


def parse(argv: list[str]) -> dict:
    return options_from_args(train_parser().parse_args(argv))


def test_124m_defaults_are_the_seed_recipe():
    cfg = resolve_micro_batch(build_config({}, "cuda"), "cuda", 1)
    assert cfg.model == GPTConfig.named("124M") and cfg.size == cfg.recipe == "124M"
    assert (cfg.batch_tokens, cfg.micro_batch, cfg.seq_len) == (2**19, 64, 1024)
    assert (cfg.lr, cfg.min_lr_ratio, cfg.warmup_steps, cfg.steps) == (6e-4, 0.1, 715, 19073)
    assert (cfg.weight_decay, cfg.grad_clip, cfg.beta1, cfg.beta2) == (0.1, 1.0, 0.9, 0.95)
    assert cfg.grad_accum_steps(1) == 8 and cfg.grad_accum_steps(8) == 1  # 8 GPUs: no accumulation, as the seed
    assert resolve_micro_batch(build_config({}, "cpu"), "cpu", 1).micro_batch == 8  # smaller on CPU, same batch
    assert build_config({"size": "1558M"}, "cuda").lr == 2e-4  # GPT-3 table: bigger models, smaller lr
    assert TrainConfig() == dataclasses.replace(RECIPES["124M"](), recipe="124M")  # the field defaults are 124M's


def test_tiny_defaults_fit_its_context_window():
    cfg = resolve_micro_batch(build_config({"size": "tiny"}, "cpu"), "cpu", 1)
    assert cfg.seq_len == 128 and cfg.grad_accum_steps(1) == 2 and cfg.grad_accum_steps(2) == 1
    cfg.validate(2)


# Hand-copied from the GPT-3 paper's table 2.1 (lr, batch) and docs/training.md (the CPU sizes and micro-batches):
# layers, channels, context, lr, batch tokens, steps, warmup steps, eval every, micro-batch cap GPU / CPU
RECIPE_VALUES = {
    "124M": (12, 768, 1024, 6e-4, 524288, 19073, 715, 250, 64, 8),
    "350M": (24, 1024, 1024, 3e-4, 524288, 19073, 715, 250, 32, 4),
    "774M": (36, 1280, 1024, 2.5e-4, 524288, 19073, 715, 250, 16, 2),
    "1558M": (48, 1600, 1024, 2e-4, 1048576, 19073, 715, 250, 8, 1),
    "mini": (6, 384, 256, 1e-3, 16384, 2000, 100, 100, 16, 16),
    "tiny": (2, 64, 128, 3e-3, 4096, 200, 20, 50, 16, 16),
}
DECIDED_LATER = {"micro_batch", "compile", "peak_flops", "hellaswag_every", "hellaswag_limit", "hellaswag_path"}
DECIDED_LATER |= {
    "sample_every",
    "init_from",
    "resume",
    "init_layers",
    "distill_from",
    "core_bundle",
}  # None: off or later


@pytest.mark.parametrize("name", RECIPES)
def test_each_named_recipe_is_a_complete_config(name):
    size, muon = name.removesuffix("-muon"), name.endswith("-muon")
    cfg = build_config({"recipe": name}, "cpu")
    assert cfg.recipe == name and cfg.size == size and cfg.model == GPTConfig.named(size)
    assert [n for n in OPTION_NAMES if getattr(cfg, n) is None and n not in DECIDED_LATER] == []
    layers, channels, context, lr, batch, steps, warmup, every, gpu, cpu = RECIPE_VALUES[size]
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (layers, channels, context)
    assert cfg.seq_len == context
    assert (cfg.lr, cfg.batch_tokens, cfg.steps, cfg.warmup_steps, cfg.eval_every) == (lr, batch, steps, warmup, every)
    assert MICRO_BATCH[size] == (gpu, cpu) and resolve_micro_batch(cfg, "cuda", 1).micro_batch == gpu
    # the optimizer: the seed's AdamW + cosine to 10%, or Muon + warmup-stable-decay to 0 without weight decay
    expected = ("muon", "wsd", 0.0, 0.0, 0.4) if muon else ("adamw", "cosine", 0.1, 0.1, 0.4)
    assert (cfg.optimizer, cfg.schedule, cfg.min_lr_ratio, cfg.weight_decay, cfg.decay_frac) == expected
    assert (cfg.muon_lr, cfg.muon_momentum, cfg.muon_weight_decay, cfg.muon_qkv) == (0.02, 0.95, 0.0, "split")
    resolve_micro_batch(cfg, "cpu", 1).validate()
    assert build_config({"size": size, "recipe": "muon" if muon else "gpt2"}, "cpu") == cfg  # the older spelling


def test_precedence_is_recipe_then_config_file_then_flags(tmp_path):
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"recipe": "tiny-muon", "lr": 1e-3, "steps": 50, "weight_decay": 0.05}))
    cfg = build_config(parse(["--config", str(file), "--steps", "7", "--schedule", "cosine"]), "cpu")
    assert cfg.recipe == "tiny-muon" and cfg.model == GPTConfig.named("tiny")
    assert (cfg.steps, cfg.schedule) == (7, "cosine")  # flags beat the file and the recipe (200, wsd)
    assert (cfg.lr, cfg.weight_decay) == (1e-3, 0.05)  # the file beats the recipe (3e-3, 0.0)
    assert (cfg.batch_tokens, cfg.optimizer, cfg.min_lr_ratio) == (4096, "muon", 0.0)  # the recipe beats the defaults
    cfg = build_config(parse(["--config", str(file), "--recipe", "mini", "--lr", "2e-3"]), "cpu")  # a flag's recipe
    assert (cfg.recipe, cfg.optimizer, cfg.steps, cfg.lr, cfg.batch_tokens) == ("mini", "adamw", 50, 2e-3, 16384)


def test_print_config_prints_the_resolved_config_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--recipe", "tiny-muon", "--lr", "1e-3", "--device", "cpu", "--out", str(out), "--print-config"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [printed[k] for k in ("recipe", "optimizer", "lr", "steps")] == ["tiny-muon", "muon", 1e-3, 200]
    assert printed["micro_batch"] == 16 and printed["model"] == GPTConfig.named("tiny").to_dict()
    assert not out.exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"recipe": "fast"}, "--recipe fast: unknown recipe; known: 124M, 350M"),
        ({"recipe": "tiny", "size": "mini"}, "--size mini and --recipe tiny name different models"),
        ({"recipe": ["tiny"]}, "--recipe must be a string"),
    ],
)
def test_bad_recipes(options, message):
    with pytest.raises(GPT2Error, match=message):
        build_config(options, "cpu")


def test_auto_micro_batch_divides_the_batch():
    cfg = build_config({"size": "124M", "batch_tokens": 2048}, "cpu")  # 2 sequences a step: the cap of 8 cannot fit
    assert resolve_micro_batch(cfg, "cpu", 1).micro_batch == 2 and resolve_micro_batch(cfg, "cuda", 2).micro_batch == 1
    assert resolve_micro_batch(dataclasses.replace(cfg, micro_batch=1), "cuda", 1).micro_batch == 1  # given: kept
    custom = build_config({"model": {"n_layer": 3}, "batch_tokens": 3 * 1024}, "cuda")  # a custom shape: 124M's cap
    assert custom.size is None and resolve_micro_batch(custom, "cuda", 1).micro_batch == 3


def test_flags_override_config_file_which_overrides_the_recipe(tmp_path):
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"size": "tiny", "lr": 1e-3, "steps": 50, "model": {"n_layer": 3}}))
    options = parse(["--config", str(file), "--steps", "7", "--no-compile"])
    assert options["steps"] == 7 and options["lr"] == 1e-3 and options["compile"] is False
    cfg = build_config(options, "cpu")
    assert cfg.model == GPTConfig(block_size=128, n_layer=3, n_head=2, n_embd=64)
    assert cfg.size is None and cfg.steps == 7 and cfg.lr == 1e-3
    assert cfg.recipe == "tiny" and cfg.batch_tokens == 4096  # a changed shape keeps the rest of its recipe
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
    # documented exceptions: `model`, `size` and `recipe`, set by the CLI's own --recipe / --size / --config
    assert set(FIELDS) - set(OPTION_NAMES) == {"model", "size", "recipe"}
    assert set(actions) == {*OPTION_NAMES, "recipe", "size", "config", "print_config"}
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


def test_micro_batch_caps_cover_the_registry():
    assert set(MICRO_BATCH) == set(CONFIGS) and set(RECIPES) == {*CONFIGS, *(f"{size}-muon" for size in CONFIGS)}


def test_docs_options_table_is_generated_from_train_config():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    tables = markdown_tables()
    assert tables in docs, "docs/training.md is stale: run python -m tools.docs_options --update docs/training.md"
    assert update_markdown(docs) == docs
    for name in OPTION_NAMES:
        assert f"| `{option_name(name)}`" in tables, name
    assert "| `--lr` | 6e-4, per recipe | peak learning rate |" in tables
    assert "| tiny | 2 x 64, context 128 | 200 | 4096 | 128 | 3e-3 | 20 | 50 | 16 GPU, 16 CPU |" in tables


def test_options_script_prints_the_tables(capsys):
    assert docs_options_main(["--markdown"]) == 0
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
