"""The Checkpointer: any stateful component round-trips by name, and run directories of the old layout resume bitwise;
the RNG and optimizer-by-name states it is built from.

The old-layout test does not let the new save code write the checkpoint it resumes from: a fixture
writer below spells out, file by file, what ``step_N/`` held before the Checkpointer existed (main's
``gpt2/train/state.py``: model.safetensors + config.json + meta.json, optimizer and rng tensor trees,
trainer.json). It writes the model, config, meta and trainer files with plain safetensors + json, and
the two tensor trees with the low-level encoder both versions share (``save_tensor_tree``,
``optimizer_state_by_name``, ``capture_rng_state``: unchanged, tested in test_store_tensors.py and
below). Generating the fixture with main's code from git instead would tie the test to
a git checkout and to import paths that move.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.model import optimizer_param_groups
from gpt2.runtime.distributed import DistContext
from gpt2.store.checkpointer import (
    Checkpointer,
    ModelState,
    OptimizerState,
    RNGState,
    capture_rng_state,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    restore_rng_state,
)
from gpt2.store.rundir import latest_checkpoint, list_checkpoints
from gpt2.store.tensors import load_tensor_tree, save_tensor_tree
from gpt2.train.trainer import Trainer, train
from train_helpers import prepared_dataset, tiny_config, train_losses


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return prepared_dataset(tmp_path_factory.getbasetemp())


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_tensor_tree(tmp_path):
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


class Counter:
    """A stateful component the trainer knows nothing about: a tensor and a JSON scalar."""

    def __init__(self) -> None:
        self.total = torch.zeros(3)
        self.label = "fresh"

    def state_dict(self) -> dict:
        return {"total": self.total.clone(), "label": self.label}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.label = state["total"], state["label"]


def test_extra_component_round_trips_without_trainer_edits(dataset, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(dataset, out, steps=2), DistContext())
    counter = Counter()
    counter.total += torch.tensor([1.5, -2.0, 3.0])
    counter.label = "after two steps"
    trainer.checkpointer.components["counter"] = counter  # e.g. a second optimizer: one more entry, nothing else
    trainer.run()
    step_dir = out / "step_000002"
    assert (step_dir / "counter.safetensors").is_file() and (step_dir / "counter.json").is_file()
    assert load_tensor_tree(step_dir, "counter")["label"] == "after two steps"

    resumed = Trainer(tiny_config(dataset, out, steps=3), DistContext())
    restored = Counter()
    resumed.checkpointer.components["counter"] = restored
    summary = resumed.run()
    assert summary["step"] == 3
    assert torch.equal(restored.total, torch.tensor([1.5, -2.0, 3.0])) and restored.label == "after two steps"
    assert [step for step, _ in list_checkpoints(out)] == [2, 3]


def test_checkpointer_round_trips_model_optimizer_rng_alone(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("tiny"))
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, 0.1), lr=1e-3)
    x = torch.randint(0, 50257, (2, 8))
    model(x, x)[1].backward()
    optimizer.step()
    components = {
        "model": ModelState(model, False, lambda: {"step": 1}),
        "optimizer": OptimizerState(model, optimizer, False),
        "rng": RNGState(DistContext()),
    }
    path = Checkpointer(tmp_path, components, DistContext(), keep_last=2).save(1)
    assert latest_checkpoint(tmp_path) == path == tmp_path / "step_000001"
    expected_draw = torch.rand(4)

    fresh = GPT(GPTConfig.named("tiny"))
    fresh_optimizer = torch.optim.AdamW(optimizer_param_groups(fresh, 0.1), lr=1e-3)
    components = {
        "model": ModelState(fresh, False, dict),
        "optimizer": OptimizerState(fresh, fresh_optimizer, False),
        "rng": RNGState(DistContext()),
    }
    Checkpointer(tmp_path, components, DistContext(), keep_last=2).load(path)
    assert torch.equal(torch.rand(4), expected_draw)  # the RNG is back where it was at the save
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # still tied after the load
    for a, b in zip(optimizer.state.values(), fresh_optimizer.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def write_old_layout(step_dir: Path, trainer: Trainer, last_loss: float) -> None:
    """``step_N/`` exactly as main's train/state.py wrote it, from a trainer's live objects (see the module doc)."""
    step_dir.mkdir(parents=True)
    model, cfg, step = trainer.model, trainer.cfg, trainer.state.step
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(weights, str(step_dir / "model.safetensors"), metadata={"format": "gpt2-from-scratch"})
    config = {"format": "gpt2-from-scratch", "format_version": 1, **model.config.to_dict()}
    (step_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    meta = {"step": step, "tokens": step * 128, "train_loss": last_loss, "size": "tiny", "data": str(cfg.data)}
    (step_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    save_tensor_tree(step_dir, "optimizer", optimizer_state_by_name(model, trainer.optimizer))
    save_tensor_tree(step_dir, "rng", {"ranks": [capture_rng_state(torch.device("cpu"))]})
    trainer_json = {
        "step": step,
        "tokens": step * 128,
        "loader": trainer.loader.state_dict(),
        "world_size": 1,
        "batch_tokens": 128,
        "last_eval": {},
        "elapsed": 1.25,
        "config": cfg.to_dict(),
    }
    (step_dir / "trainer.json").write_text(json.dumps(trainer_json, indent=2, sort_keys=True) + "\n")
    (step_dir.parent / "latest").write_text(step_dir.name + "\n")


def test_old_layout_resumes_bitwise_and_matches_the_new_layout(dataset, tmp_path):
    train(tiny_config(dataset, tmp_path / "reference", steps=4))
    reference = train_losses(tmp_path / "reference")

    # Train two steps; the new code saves step_000002, the fixture writer the same state in the old layout.
    first = Trainer(tiny_config(dataset, tmp_path / "new", steps=2), DistContext())
    summary = first.run()
    old_run = tmp_path / "old"
    write_old_layout(old_run / "step_000002", first, summary["loss"])

    new_dir, old_dir = tmp_path / "new" / "step_000002", old_run / "step_000002"
    assert sorted(p.name for p in new_dir.iterdir()) == sorted(p.name for p in old_dir.iterdir())
    for name in ("config.json", "meta.json", "optimizer.json", "rng.json"):
        assert json.loads((new_dir / name).read_text()) == json.loads((old_dir / name).read_text()), name
    new_trainer, old_trainer = (json.loads((d / "trainer.json").read_text()) for d in (new_dir, old_dir))
    assert {**new_trainer, "elapsed": None} == {**old_trainer, "elapsed": None}
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        new, old = load_file(str(new_dir / name)), load_file(str(old_dir / name))
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new), name

    # The old-layout run continues exactly as the uninterrupted one: same losses, bit for bit.
    resumed = Trainer(tiny_config(dataset, old_run, steps=4), DistContext())
    assert resumed.resume_from == old_dir
    resumed.run()
    assert resumed.state.elapsed == 1.25  # the training time read back from the old trainer.json
    assert train_losses(old_run) == reference[2:]
    assert train_losses(tmp_path / "new") == reference[:2]
