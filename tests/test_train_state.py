"""The trainer's checkpoint component: the checks before a resume."""

from __future__ import annotations

import pytest

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.store.checkpoint import save_model
from gpt2.train.state import check_resumable


def test_check_resumable_names_the_differences(tmp_path):
    save_model(tmp_path / "ckpt", GPT(GPTConfig.named("tiny")), {"step": 3})
    with pytest.raises(GPT2Error, match=r"another model config \(n_layer=2 \(run wants 3\)\)"):
        check_resumable(tmp_path / "ckpt", GPTConfig(block_size=128, n_layer=3, n_head=2, n_embd=64))
    with pytest.raises(GPT2Error, match="not a training checkpoint"):
        check_resumable(tmp_path / "ckpt", GPTConfig.named("tiny"))  # a model-only checkpoint
