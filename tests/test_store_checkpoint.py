"""Our checkpoint format: exact round trips, atomic writes, unchanged files on disk, clear errors on bad input.

Loading from other sources (run directories, Hugging Face, .pt files) is tested in test_store_load.py.
"""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.store.checkpoint import (
    WEIGHTS_FILE,
    find_checkpoint,
    is_checkpoint_dir,
    load_checkpoint,
    read_config,
    read_meta,
    save_model,
)
from gpt2.store.files import atomic_directory


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


def test_files_on_disk_are_those_of_the_format(ckpt, model):
    """The values every earlier checkpoint has on disk: changing them would orphan old checkpoints."""
    fields = {"block_size": 128, "vocab_size": 50304, "n_layer": 2, "n_head": 2, "n_embd": 64, "dropout": 0.0}
    expected = {"format": "gpt2-from-scratch", "format_version": 1, **fields}
    assert (ckpt / "config.json").read_text() == json.dumps(expected, indent=2) + "\n"
    assert json.loads((ckpt / "meta.json").read_text()) == {"step": 12, "val_loss": 4.5}
    with safe_open(str(ckpt / WEIGHTS_FILE), "pt") as f:
        assert f.metadata() == {"format": "gpt2-from-scratch"}
        stored = set(f.keys())
    assert "lm_head.weight" not in stored and "transformer.wte.weight" in stored  # the tied head is stored once


def test_checkpoint_written_by_the_old_writer_loads(tmp_path, model):
    """A checkpoint as the code before gpt2.store.files wrote it (compact meta, no sort), rebuilt here by hand."""
    old = tmp_path / "old"
    old.mkdir()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(old / WEIGHTS_FILE), metadata={"format": "gpt2-from-scratch"})
    config = {"format": "gpt2-from-scratch", "format_version": 1, **model.config.to_dict()}
    del config["dropout"]  # older than the dropout field
    (old / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (old / "meta.json").write_text(json.dumps({"step": 7, "tokens": 7168}))
    assert is_checkpoint_dir(old) and read_meta(old) == {"step": 7, "tokens": 7168}
    loaded = load_checkpoint(old)
    assert_same_weights(loaded, model)
    assert loaded.config.dropout == 0.0 and loaded.config == model.config


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
        (lambda c: (c / "meta.json").write_text("[1, 2]"), "corrupt checkpoint metadata .*expected a JSON object"),
        (lambda c: edit_config(c, format_version="2"), "format_version must be a whole number, got '2'"),
        (lambda c: edit_config(c, n_embd=128), "has shape \\[50304, 64\\], config needs \\[50304, 128\\]"),
        (lambda c: edit_config(c, n_layer=3), "the config says n_layer=3 but the weights hold 2 blocks"),
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


def test_missing_checkpoint_and_not_ours(tmp_path):
    with pytest.raises(GPT2Error, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")
    assert not is_checkpoint_dir(tmp_path / "nope") and not is_checkpoint_dir(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    assert not is_checkpoint_dir(tmp_path)  # unreadable: not ours, and no exception from a yes/no question
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))  # a Hugging Face config
    assert not is_checkpoint_dir(tmp_path)
    with pytest.raises(GPT2Error, match='is not a gpt2-from-scratch config \\(missing "format"'):
        load_checkpoint(tmp_path)


def test_find_checkpoint_of_a_checkpoint_or_a_run(ckpt, tmp_path, model):
    assert find_checkpoint(ckpt) == ckpt
    run = tmp_path / "run"
    save_model(run / "step_000020", model, {"step": 20})
    assert find_checkpoint(run) is None  # no pointer yet
    (run / "latest").write_text("step_000020\n")
    assert find_checkpoint(run) == run / "step_000020"
    assert find_checkpoint(tmp_path / "missing") is None
