"""gpt2.store.tensors: the weights' shape table, and tensor trees (optimizer and RNG states as safetensors + JSON):
exact round trips, old files, clear errors."""

import json
import random

import pytest
import torch
from safetensors.torch import save_file

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.store.tensors import count_parameters, expected_shapes, load_tensor_tree, read_safetensors, save_tensor_tree


@pytest.fixture(scope="module")
def stepped_optimizer():
    """An AdamW after one step: its state dict has int keys, nested dicts, lists, floats, bools and tensors."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    layer(torch.randn(2, 8)).square().sum().backward()
    optimizer.step()
    return layer, optimizer


def test_round_trip_keeps_every_type_and_tensor(tmp_path, stepped_optimizer):
    layer, optimizer = stepped_optimizer
    tree = {
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},  # (int, tuple of 625 ints, None)
        "loader": {"position": 12345, "shard": "train_000.bin", "nested": [[1.5, True], {"x": None}]},
        "bf16": torch.arange(6, dtype=torch.bfloat16).view(2, 3).t(),  # non-contiguous, a dtype numpy lacks
    }
    save_tensor_tree(tmp_path, "state", tree)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.safetensors"]
    back = load_tensor_tree(tmp_path, "state")

    assert back["loader"] == tree["loader"] and back["rng"]["python"] == random.getstate()
    assert isinstance(back["rng"]["python"], tuple) and isinstance(back["rng"]["python"][1], tuple)
    assert torch.equal(back["rng"]["torch"], tree["rng"]["torch"])
    assert back["bf16"].dtype == torch.bfloat16 and torch.equal(back["bf16"], tree["bf16"])
    original = tree["optimizer"]
    assert back["optimizer"]["param_groups"] == original["param_groups"]
    assert back["optimizer"]["state"].keys() == original["state"].keys() == {0, 1}  # int keys stay ints
    for key, entries in original["state"].items():
        for name, value in entries.items():
            assert torch.equal(back["optimizer"]["state"][key][name], value), (key, name)
    fresh = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    fresh.load_state_dict(back["optimizer"])  # usable as is
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], original["state"][0]["exp_avg"])


def test_files_written_before_the_split_still_load(tmp_path):
    """The layout of the pre-``gpt2.store.tensors`` writer (compact JSON skeleton), written here by hand."""
    tensors = {"0": torch.tensor([1.0, 2.0]), "1": torch.tensor([7], dtype=torch.int64)}
    save_file(tensors, str(tmp_path / "old.safetensors"))
    skeleton = {"__dict__": [[0, {"__tensor__": "0"}], ["meta", {"__list__": [{"__tensor__": "1"}, 3], "tuple": True}]]}
    (tmp_path / "old.json").write_text(json.dumps(skeleton))
    back = load_tensor_tree(tmp_path, "old")
    assert back.keys() == {0, "meta"} and torch.equal(back[0], torch.tensor([1.0, 2.0]))
    assert isinstance(back["meta"], tuple) and back["meta"][1] == 3 and back["meta"][0].tolist() == [7]


def test_unstorable_values_and_damaged_files_are_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="cannot store object"):
        save_tensor_tree(tmp_path, "bad", {"x": object()})
    with pytest.raises(TypeError, match="cannot store set"):
        save_tensor_tree(tmp_path, "bad", [{1, 2}])
    with pytest.raises(GPT2Error, match="missing nothing.json"):
        load_tensor_tree(tmp_path, "nothing")

    save_tensor_tree(tmp_path, "tree", {"w": torch.ones(3)})
    (tmp_path / "tree.safetensors").unlink()
    with pytest.raises(GPT2Error, match="missing weights file: .*tree.safetensors"):
        load_tensor_tree(tmp_path, "tree")
    (tmp_path / "tree.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(GPT2Error, match="corrupt weights file"):
        read_safetensors(tmp_path / "tree.safetensors")
    (tmp_path / "tree.json").write_text('{"__dict__": [["w", ')
    with pytest.raises(GPT2Error, match="corrupt tensor tree .*tree.json: not valid JSON"):
        load_tensor_tree(tmp_path, "tree")

    save_tensor_tree(tmp_path, "short", {"w": torch.ones(3)})
    save_file({}, str(tmp_path / "short.safetensors"))  # skeleton names tensor "0", the file has none
    with pytest.raises(GPT2Error, match="corrupt tensor tree .*short.json: no tensor '0'"):
        load_tensor_tree(tmp_path, "short")


@pytest.mark.parametrize("size", ["tiny", "124M"])
def test_expected_shapes_are_the_models(size):
    """Files are checked against expected_shapes without building a GPT: it lists exactly the model's weights."""
    config = GPTConfig.named(size)
    with torch.device("meta"):
        model = GPT(config)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert expected_shapes(config) == actual
    assert count_parameters(expected_shapes(config)) == model.num_parameters()
