"""``gpt2 info``: config, parameter count and metadata of sizes, checkpoints and run directories."""

import json

import pytest
import torch

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.info import describe, parameter_count
from gpt2.store.checkpoint import save_model


def test_parameter_count_of_sizes_without_allocating():
    assert parameter_count(GPTConfig.named("124M")) == 124_475_904
    assert parameter_count(GPTConfig.named("1558M")) == 1_557_686_400  # 6 GB in fp32: must come from meta tensors


def test_describe_size_and_alias():
    info = describe("gpt2")
    assert info["parameters"] == 124_475_904 and info["config"]["n_layer"] == 12 and info["meta"] == {}
    assert describe("tiny")["config"] == GPTConfig.named("tiny").to_dict()


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("tiny"))
    return save_model(tmp_path / "run" / "step_000050", model, {"step": 50, "tokens": 204800, "val_loss": 6.25})


def test_describe_checkpoint_and_run_dir(ckpt):
    info = describe(str(ckpt))
    assert info["parameters"] == GPT(GPTConfig.named("tiny")).num_parameters() == 3_327_744
    assert info["meta"]["step"] == 50 and info["source"] == str(ckpt)
    (ckpt.parent / "latest").write_text(ckpt.name)
    assert describe(str(ckpt.parent))["source"] == str(ckpt)


def test_describe_errors(tmp_path, ckpt):
    with pytest.raises(GPT2Error, match="'huge' is neither a model size .*124M.* nor an existing checkpoint"):
        describe("huge")
    with pytest.raises(GPT2Error, match="is neither a checkpoint, a run directory nor a Hugging Face model directory"):
        describe(str(tmp_path))
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    with pytest.raises(GPT2Error, match="vocab_size is 1000"):
        describe(str(ckpt))
