"""Checkpoint state pieces: RNG round trip, optimizer state by name, resume checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.model import optimizer_param_groups
from gpt2.store.checkpoint import save_model
from gpt2.train.checkpointer import check_resumable
from gpt2.train.state import (
    capture_rng_state,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    restore_rng_state,
)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_tensor_tree(tmp_path):
    from gpt2.store.tensor_tree import load_tensor_tree, save_tensor_tree

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng_state(torch.device("cpu"))
    expected = draws()
    save_tensor_tree(tmp_path, "rng", {"ranks": [state]})
    draws()  # move every generator on
    restore_rng_state(load_tensor_tree(tmp_path, "rng")["ranks"][0], torch.device("cpu"))
    assert draws() == expected


def _stepped_optimizer(model: GPT) -> torch.optim.AdamW:
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, 0.1), lr=1e-3)
    x = torch.randint(0, 50257, (2, 8))
    model(x, x)[1].backward()
    optimizer.step()
    return optimizer


def test_optimizer_state_by_name_round_trip():
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("tiny"))
    optimizer = _stepped_optimizer(model)
    named = optimizer_state_by_name(model, optimizer)
    assert "transformer.wte.weight" in named["state"] and "lm_head.weight" not in named["state"]  # tied: once
    assert named["param_groups"][0]["weight_decay"] == 0.1
    fresh = torch.optim.AdamW(optimizer_param_groups(model, 0.1), lr=1e-3)
    load_optimizer_state_by_name(model, fresh, named)
    for a, b in zip(optimizer.state.values(), fresh.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    other = GPT(GPTConfig(block_size=128, n_layer=3, n_head=2, n_embd=64))
    with pytest.raises(GPT2Error, match="optimizer state does not match"):
        load_optimizer_state_by_name(other, torch.optim.AdamW(other.parameters()), named)


def test_check_resumable_names_the_differences(tmp_path):
    save_model(tmp_path / "ckpt", GPT(GPTConfig.named("tiny")), {"step": 3})
    with pytest.raises(GPT2Error, match=r"another model config \(n_layer=2 \(run wants 3\)\)"):
        check_resumable(tmp_path / "ckpt", GPTConfig(block_size=128, n_layer=3, n_head=2, n_embd=64))
    with pytest.raises(GPT2Error, match="not a training checkpoint"):
        check_resumable(tmp_path / "ckpt", GPTConfig.named("tiny"))  # a model-only checkpoint
