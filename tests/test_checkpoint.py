"""Our checkpoint format: exact round trips, atomic writes, clear errors on every kind of bad input."""

import json

import pytest
import torch

import gpt2
from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.checkpoint import (
    WEIGHTS_FILE,
    is_checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    load_tensor_tree,
    read_config,
    read_meta,
    save_model,
    save_tensor_tree,
)
from gpt2.fileio import atomic_directory, write_json_atomic


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig.named("tiny"))


@pytest.fixture
def ckpt(tmp_path, model):
    return save_model(tmp_path / "ckpt", model, {"step": 12, "val_loss": 4.5})


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_save_load_round_trip_is_bitwise(ckpt, model):
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "meta.json", "model.safetensors"]
    loaded = load_checkpoint(ckpt)
    assert loaded.config == model.config and not loaded.training
    assert_same_weights(loaded, model)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied after loading
    assert read_meta(ckpt) == {"step": 12, "val_loss": 4.5}
    assert read_config(ckpt) == model.config and is_checkpoint_dir(ckpt)
    assert_same_weights(gpt2.load(ckpt), model)


def test_save_unwraps_a_compiled_model(tmp_path, model):
    # The real torch.compile wrapper (built lazily, never run); DDP orders: tests/test_runtime.py
    compiled = torch.compile(model)
    assert_same_weights(load_checkpoint(save_model(tmp_path / "w", compiled)), model)


def test_exception_inside_atomic_directory_keeps_the_old_checkpoint(ckpt, model):
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    with pytest.raises(RuntimeError, match="crash"), atomic_directory(ckpt) as tmp:
        (tmp / WEIGHTS_FILE).write_bytes(b"half written")
        raise RuntimeError("simulated crash mid-save")
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    assert [p.name for p in ckpt.parent.iterdir()] == ["ckpt"]  # no temp dirs left behind
    assert_same_weights(load_checkpoint(ckpt), model)


def test_successful_resave_replaces_the_whole_directory(ckpt, tmp_path):
    (ckpt / "stale.txt").write_text("from the old save")
    other = GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32))
    save_model(ckpt, other, {"step": 13})
    assert not (ckpt / "stale.txt").exists()
    assert load_checkpoint(ckpt).config == other.config and read_meta(ckpt) == {"step": 13}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def edit_config(ckpt, **changes):
    config = json.loads((ckpt / "config.json").read_text())
    config.update(changes)
    (ckpt / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / WEIGHTS_FILE).write_bytes(b"\x00" * 100), "corrupt weights file"),
        (lambda c: (c / WEIGHTS_FILE).write_bytes((c / WEIGHTS_FILE).read_bytes()[:5000]), "corrupt weights file"),
        (lambda c: (c / WEIGHTS_FILE).unlink(), "missing weights file"),
        (lambda c: (c / "config.json").unlink(), "has no config.json"),
        (lambda c: (c / "config.json").write_text("{not json"), "corrupt checkpoint config"),
        (lambda c: (c / "meta.json").write_text("[1, 2"), "corrupt checkpoint metadata"),
        (lambda c: edit_config(c, n_embd=128), "has shape \\[50304, 64\\], config needs \\[50304, 128\\]"),
        (lambda c: edit_config(c, n_layer=3), "missing: \\['transformer.h.2"),
        (lambda c: edit_config(c, vocab_size=50257), "transformer.wte.weight has shape \\[50304, 64\\]"),
        (lambda c: edit_config(c, vocab_size=1000), "vocab_size is 1000"),
        (lambda c: edit_config(c, format="something-else"), "is not a gpt2-from-scratch config"),
        (lambda c: edit_config(c, format_version=99), "format_version 99 is newer"),
    ],
)
def test_bad_checkpoints_are_clear_errors(ckpt, damage, message):
    damage(ckpt)
    with pytest.raises(GPT2Error, match=message):
        load_checkpoint(ckpt)
        read_meta(ckpt)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(GPT2Error, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(GPT2Error, match="model not found"):
        gpt2.load(str(tmp_path / "nope"))
    with pytest.raises(GPT2Error, match="neither a checkpoint, a run directory nor a Hugging Face"):
        gpt2.load(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(GPT2Error, match="unsupported model file"):
        gpt2.load(tmp_path / "weights.bin")


def test_run_directory_loads_latest(tmp_path, model):
    run = tmp_path / "run"
    save_model(run / "step_000010", GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32)), {"step": 10})
    save_model(run / "step_000020", model, {"step": 20})
    assert latest_checkpoint(run) is None  # no pointer yet
    write_json_atomic(run / "run.json", {"config": model.config.to_dict()})
    (run / "latest").write_text("step_000020\n")
    assert latest_checkpoint(run) == run / "step_000020"
    assert_same_weights(gpt2.load(run), model)
    (run / "latest").write_text("step_000030")
    with pytest.raises(GPT2Error, match="points to 'step_000030', which does not exist"):
        gpt2.load(run)


def test_tensor_tree_round_trip(tmp_path, model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _, loss = model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    loss.backward()
    optimizer.step()
    tree = {
        "optimizer": optimizer.state_dict(),  # int keys, nested dicts, lists, floats, bools, tensors
        "rng": {"torch": torch.get_rng_state(), "python": (3, (1, 2, 3), None)},
        "loader": {"position": 12345, "shard": "train_000.bin", "nested": [[1.5, True], {"x": None}]},
    }
    save_tensor_tree(tmp_path, "state", tree)
    back = load_tensor_tree(tmp_path, "state")
    assert back["loader"] == tree["loader"] and back["rng"]["python"] == (3, (1, 2, 3), None)
    assert torch.equal(back["rng"]["torch"], tree["rng"]["torch"])
    assert back["optimizer"]["param_groups"] == tree["optimizer"]["param_groups"]
    state, original = back["optimizer"]["state"], tree["optimizer"]["state"]
    assert state.keys() == original.keys() and all(isinstance(k, int) for k in state)
    for key in original:
        for name, value in original[key].items():
            assert torch.equal(state[key][name], value), (key, name)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(back["optimizer"])  # usable as is
    with pytest.raises(TypeError, match="cannot store object"):
        save_tensor_tree(tmp_path, "bad", {"x": object()})
    with pytest.raises(GPT2Error, match="missing nothing.json"):
        load_tensor_tree(tmp_path, "nothing")
