"""Inference precision: dynamic int8 Linear layers and bf16 keep the model's function (tied embedding
included), and `gpt2 sample` / `gpt2 eval` / the serving engine accept them."""

import copy
import json

import pytest
import torch

from gpt2 import GPT, GPT2Error, GPTConfig, save_model
from gpt2.cli import main
from gpt2.generate import generate
from gpt2.generate.sampling import SamplingOptions
from gpt2.quantize import is_quantized, prepare_model
from gpt2.serve.engine import Engine

TEXT = "The quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.named("tiny")).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> str:
    return str(save_model(tmp_path_factory.mktemp("quantize") / "tiny", model))


def test_int8_quantizes_every_linear_and_keeps_the_embedding_exact(model):
    q = prepare_model(copy.deepcopy(model), "fp32", "int8")
    assert is_quantized(q) and not is_quantized(model)
    linears = [m for m in q.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == []  # attention, MLP and the tied lm_head are all int8 now
    # the token embedding still holds the exact fp32 weights that lm_head shared before quantization
    assert torch.equal(q.transformer.wte.weight, model.transformer.wte.weight)
    assert q.transformer.wte.weight.dtype == torch.float32
    idx = torch.randint(0, 50257, (2, 32))
    with torch.inference_mode():
        ref, _ = model(idx)
        got, _ = q(idx)
    error = (got - ref).abs().max().item()
    assert 0 < error < 0.05 * ref.abs().max().item()  # changed, but only by quantization noise


def test_bf16_model_generates(model):
    b = prepare_model(copy.deepcopy(model), "bf16")
    assert b.transformer.wte.weight.dtype == torch.bfloat16
    assert len(generate(b, "Hello", max_new_tokens=5, temperature=0.0)[0]) > 0


def test_impossible_combinations_are_one_error(model):
    with pytest.raises(GPT2Error, match="use it with --weights-dtype fp32"):
        prepare_model(copy.deepcopy(model), "bf16", "int8")
    with pytest.raises(GPT2Error, match="--weights-dtype must be one of"):
        prepare_model(copy.deepcopy(model), "fp16")


def test_engine_decodes_a_quantized_model_like_generate(model):
    q = prepare_model(copy.deepcopy(model), "fp32", "int8")
    engine = Engine(q)
    try:
        options = SamplingOptions(max_new_tokens=12, temperature=0.0)
        steps = [s.token_ids[0] for s in engine.stream([10, 20, 30], options)]
    finally:
        engine.close()
    from gpt2.generate import generate_token_ids

    assert steps == [ids[0] for ids in generate_token_ids(q, [10, 20, 30], options, stop_at_eot=False)][: len(steps)]


def test_sample_and_eval_accept_the_flags(checkpoint, tmp_path, capsys):
    argv = ["sample", "--model", checkpoint, "--prompt", "Hi", "--max-new-tokens", "6", "--temperature", "0"]
    assert main([*argv, "--quantize", "int8"]) == 0
    assert capsys.readouterr().out.startswith("Hi")
    assert main([*argv, "--weights-dtype", "bf16"]) == 0
    assert capsys.readouterr().out.startswith("Hi")
    text = tmp_path / "held_out.txt"
    text.write_text(TEXT)
    losses = {}
    for extra in ([], ["--quantize", "int8"]):
        eval_argv = ["eval", "loss", "--model", checkpoint, "--text", str(text), "--seq-len", "64", "--json"]
        assert main([*eval_argv, "--device", "cpu", *extra]) == 0
        losses[bool(extra)] = json.loads(capsys.readouterr().out)["loss"]
    assert losses[True] != losses[False] and abs(losses[True] - losses[False]) < 0.05
    assert (
        main(["eval", "loss", "--model", checkpoint, "--text", str(text), "--quantize", "int8", "--autocast", "bf16"])
        == 1
    )
    assert "--quantize int8 evaluates in fp32" in capsys.readouterr().err
