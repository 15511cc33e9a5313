"""Hugging Face import/export and safe nanoGPT/seed ``.pt`` import, on tiny locally created models."""

import dataclasses
import json
import os
import shutil
import sys
import types

import pytest
import torch

import gpt2
from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.cli import main
from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.interop import export_hf, import_nanogpt, load_hf_model, load_nanogpt_checkpoint
from gpt2.interop.hf import config_from_hf, hf_config_dict
from gpt2.store.checkpoint import load_checkpoint, read_meta, save_model
from gpt2.tokenizer import EOT_ID, get_tokenizer

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4  # max abs logits difference allowed in fp32


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """No test may touch the network: the hub is unreachable here and retries would cost ~25 s."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random tiny GPT-2 saved by transformers itself (vocab 50257, Conv1D layout)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128)
    model = transformers.GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokens():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, GPT2_VOCAB_SIZE, (2, 40), generator=generator)


def hf_logits(model, idx):
    with torch.no_grad():
        return model(idx).logits


def our_logits(model, idx):
    with torch.no_grad():
        return model(idx)[0]


def max_diff(a, b):
    return (a - b).abs().max().item()


def test_import_hf_dir_matches_transformers_logits(hf_dir, tokens):
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    model = load_hf_model(str(hf_dir))
    assert model.config == GPTConfig(block_size=128, vocab_size=GPT2_VOCAB_SIZE, n_layer=2, n_head=2, n_embd=64)
    assert not model.training
    assert model.lm_head.weight is model.transformer.wte.weight
    diff = max_diff(hf_logits(reference, tokens), our_logits(model, tokens))
    print(f"HF import max abs logits diff: {diff:.3g}")
    assert diff <= TOLERANCE
    # gpt2.load recognises an HF directory too
    assert torch.equal(our_logits(gpt2.load(hf_dir), tokens), our_logits(model, tokens))


@pytest.mark.parametrize("layout", ["sharded-safetensors", "pytorch_model.bin", "gpt2model-keys"])
def test_hf_dir_weight_layouts_load_without_transformers(hf_dir, tmp_path, tokens, layout):
    """save_pretrained's shards, an old pytorch_model.bin, and a GPT2Model's keys (no "transformer." prefix)."""
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    path = tmp_path / layout
    if layout == "sharded-safetensors":
        reference.save_pretrained(path, max_shard_size="5MB")
        assert len(list(path.glob("model-*.safetensors"))) > 1
    else:
        path.mkdir()
        shutil.copyfile(hf_dir / "config.json", path / "config.json")
        state = reference.state_dict()
        if layout == "gpt2model-keys":
            state = {k.removeprefix("transformer."): v for k, v in state.items() if k != "lm_head.weight"}
        torch.save(state, path / "pytorch_model.bin")
    assert max_diff(hf_logits(reference, tokens), our_logits(load_hf_model(str(path)), tokens)) <= TOLERANCE


def test_export_padded_model_loads_in_transformers_offline(tmp_path, tokens):
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("tiny")).eval()  # our training layout: vocab padded to 50304
    assert model.config.vocab_size == 50304
    out = export_hf(model, tmp_path / "hf")
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert hf_model.config.vocab_size == GPT2_VOCAB_SIZE
    assert hf_model.transformer.wte.weight.shape == (GPT2_VOCAB_SIZE, 64)
    assert hf_model.lm_head.weight.data_ptr() == hf_model.transformer.wte.weight.data_ptr()  # still tied
    ours = our_logits(model, tokens)[..., :GPT2_VOCAB_SIZE]
    diff = max_diff(hf_logits(hf_model, tokens), ours)
    print(f"HF export max abs logits diff: {diff:.3g}")
    assert diff <= TOLERANCE

    assert (out / "tokenizer.json").is_file() and (out / "vocab.json").is_file() and (out / "merges.txt").is_file()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    texts = [
        "Hello world! It's 2024: naïve café 🤖 你好   spaced\n\tdef f(x): return x ** 2",
        "   \n\n  leading and trailing whitespace runs      ",
        "I'm sure they'll say we've won; you're right, he'd agree. 1234567 + 0.5e-3",
    ]
    for text in texts:
        assert tokenizer(text)["input_ids"] == get_tokenizer().encode(text), text
        assert tokenizer.decode(get_tokenizer().encode(text)) == text
    assert tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>") == EOT_ID
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == generation["bos_token_id"] == EOT_ID


def test_export_maps_dropout_to_the_three_hf_rates(tmp_path):
    config = hf_config_dict(dataclasses.replace(GPTConfig.named("tiny"), dropout=0.1))
    assert (config["resid_pdrop"], config["embd_pdrop"], config["attn_pdrop"]) == (0.1, 0.1, 0.1)
    assert hf_config_dict(GPTConfig.named("tiny"))["resid_pdrop"] == 0.0
    # and the other way: an HF config's pdrop (the hub's 0.1) is not imported, --dropout decides
    hub_like = {**hf_config_dict(GPTConfig.named("tiny")), "resid_pdrop": 0.1, "vocab_size": 50257}
    assert config_from_hf(hub_like, "hub").dropout == 0.0


def test_export_then_reimport_is_exact(hf_dir, tmp_path):
    model = load_hf_model(str(hf_dir))
    back = load_hf_model(str(export_hf(model, tmp_path / "again")))
    for key, value in model.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key


def _edited_hf_dir(hf_dir, tmp_path, **changes):
    path = tmp_path / "edited"
    shutil.copytree(hf_dir, path)
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "llama"}, "only GPT-2"),
        ({"activation_function": "relu"}, "activation_function='relu'"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"vocab_size": 1000}, "at least 50257"),
    ],
)
def test_unsupported_hf_configs_are_rejected(hf_dir, tmp_path, changes, message):
    with pytest.raises(GPT2Error, match=message):
        load_hf_model(str(_edited_hf_dir(hf_dir, tmp_path, **changes)))


def test_missing_hf_dir(tmp_path):
    with pytest.raises(GPT2Error, match="Hugging Face model directory not found"):
        load_hf_model(str(tmp_path / "nothere"))
    with pytest.raises(GPT2Error, match="not a Hugging Face model directory \\(no config.json\\)"):
        load_hf_model(str(tmp_path))


def test_hf_dir_without_weights_is_clear_error(hf_dir, tmp_path):
    path = _edited_hf_dir(hf_dir, tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(GPT2Error, match="cannot load Hugging Face model from"):
        load_hf_model(str(path))


def test_our_checkpoint_is_not_an_hf_dir(tmp_path):
    path = save_model(tmp_path / "ours", GPT(GPTConfig.named("tiny")))
    with pytest.raises(GPT2Error, match="already a gpt2-from-scratch checkpoint"):
        load_hf_model(str(path))


def test_unknown_hub_name_is_clear_error():
    with pytest.raises(GPT2Error, match="Hugging Face Hub: the hub is unreachable or the model does not exist"):
        load_hf_model("no-such-org/no-such-gpt2")


# --- nanoGPT / seed .pt files -------------------------------------------------------------------------------------


def make_seed_config(monkeypatch, module_name):
    """A ``GPTConfig`` dataclass shaped like the seed's, pickled as ``<module_name>.GPTConfig``."""
    fields = [("block_size", int, 128), ("vocab_size", int, 50304), ("n_layer", int, 2), ("n_head", int, 2)]
    cls = dataclasses.make_dataclass("GPTConfig", [*fields, ("n_embd", int, 64)])
    cls.__module__ = module_name
    if module_name not in sys.modules:
        monkeypatch.setitem(sys.modules, module_name, types.ModuleType(module_name))
    # only needed to *save* it (pickle checks the class is importable); loading never imports the module
    monkeypatch.setattr(sys.modules[module_name], "GPTConfig", cls, raising=False)
    return cls


@pytest.fixture
def seed_config(monkeypatch):
    """The seed's model.py layout: ``from model import GPTConfig``."""
    return make_seed_config(monkeypatch, "model")


def test_build_nanogpt_script_checkpoint(monkeypatch, tmp_path):
    """build-nanogpt's train_gpt2.py defines GPTConfig in the script itself: ``__main__.GPTConfig``."""
    config_class = make_seed_config(monkeypatch, "__main__")
    model = GPT(GPTConfig.named("tiny"))
    path = tmp_path / "model_19072.pt"
    torch.save({"model": model.state_dict(), "config": config_class(), "step": 19072, "val_loss": 3.07}, path)
    imported, meta = import_nanogpt(path)
    assert imported.config == model.config and meta["step"] == 19072
    assert torch.equal(imported.transformer.h[1].mlp.c_fc.weight, model.transformer.h[1].mlp.c_fc.weight)


def test_legacy_torch_save_format(tmp_path):
    model = GPT(GPTConfig.named("tiny"))
    args = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128, "vocab_size": 50304}
    path = tmp_path / "legacy.pt"
    torch.save({"model": model.state_dict(), "model_args": args}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_nanogpt_checkpoint(path).transformer.wpe.weight, model.transformer.wpe.weight)


def test_seed_checkpoint_imports_exactly(seed_config, tmp_path, tokens):
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("tiny")).eval()
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}  # saved from a torch.compile'd model
    state["_orig_mod.transformer.h.0.attn.bias"] = torch.ones(1, 1, 128, 128).tril()  # old causal-mask buffer
    path = tmp_path / "model_00100.pt"
    torch.save({"model": state, "config": seed_config(), "step": 100, "val_loss": 3.25}, path)

    imported, meta = import_nanogpt(path)
    assert imported.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, imported.state_dict()[key]), key
    assert imported.lm_head.weight is imported.transformer.wte.weight
    assert meta["step"] == 100 and meta["val_loss"] == pytest.approx(3.25)
    assert torch.equal(our_logits(imported.eval(), tokens), our_logits(model, tokens))
    assert isinstance(gpt2.load(path), GPT)


def test_nanogpt_checkpoint_with_model_args_and_no_bias(tmp_path, tokens):
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("tiny")).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_()  # nonzero biases so the zero-filled ones below would be caught if misapplied
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith(".bias")}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.zero_()  # bias=False in nanoGPT computes exactly what zero biases compute
    model_args = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128, "bias": False, "vocab_size": 50304}
    checkpoint = {
        "model": state,
        "model_args": model_args,
        "config": {"n_layer": 2, "learning_rate": 6e-4, "dataset": "openwebtext"},
        "iter_num": 5000,
        "best_val_loss": torch.tensor(2.85),
        "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "params": [0, 1]}]},
    }
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint, path)
    imported, meta = import_nanogpt(path)
    assert meta["step"] == 5000 and meta["val_loss"] == pytest.approx(2.85)
    assert torch.equal(our_logits(imported.eval(), tokens), our_logits(model, tokens))


class Payload:
    """A pickle that runs a shell command when loaded: what a malicious .pt looks like."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvilConfig(Payload):
    """Same payload behind a config-like name: the global that runs is still os.system, so it is refused."""


@pytest.mark.parametrize("payload_class", [Payload, EvilConfig])
def test_malicious_pt_is_refused_and_payload_never_runs(tmp_path, payload_class):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": GPT(GPTConfig.named("tiny")).state_dict(), "config": payload_class(marker)}, path)
    with pytest.raises(GPT2Error, match="refusing to load"):
        load_nanogpt_checkpoint(path)
    assert not marker.exists()


class Opaque:
    """An ordinary custom class: harmless here, but unpickling it would import and run foreign code."""


def test_pt_with_arbitrary_class_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {}, "extra": Opaque()}, path)
    with pytest.raises(GPT2Error, match="test_interop.Opaque"):
        load_nanogpt_checkpoint(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x80\x02garbage", "cannot load safely \\(Unsupported operand"),
        (b"PK\x03\x04 truncated zip", "cannot load safely .*checkpoint file is corrupted"),
        (None, "checkpoint file not found"),
    ],
)
def test_bad_pt_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GPT2Error, match=message):
        load_nanogpt_checkpoint(path)


def test_truncated_pt_file(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"model": GPT(GPTConfig.named("tiny")).state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # e.g. an interrupted download
    with pytest.raises(GPT2Error, match="cut.pt: (not a readable torch checkpoint|cannot load safely)"):
        load_nanogpt_checkpoint(path)


def test_pt_without_config_or_with_wrong_shapes(tmp_path):
    state = GPT(GPTConfig.named("tiny")).state_dict()
    path = tmp_path / "noconfig.pt"
    torch.save({"model": state}, path)
    with pytest.raises(GPT2Error, match="no model config"):
        load_nanogpt_checkpoint(path)
    torch.save({"model": state, "model_args": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 256}}, path)
    with pytest.raises(GPT2Error, match="transformer.wpe.weight has shape"):
        load_nanogpt_checkpoint(path)


# --- command line --------------------------------------------------------------------------------------------------


def test_cli_import_and_export_round_trip(hf_dir, tmp_path, tokens, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["import", "hf", str(hf_dir), "--out", str(ckpt)]) == 0
    assert "imported" in capsys.readouterr().out
    assert read_meta(ckpt) == {"imported_from": "hf", "source": str(hf_dir)}
    exported = tmp_path / "exported"
    assert main(["export", str(ckpt), "--format", "hf", "--out", str(exported)]) == 0
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    roundtrip = transformers.GPT2LMHeadModel.from_pretrained(exported).eval()
    assert max_diff(hf_logits(reference, tokens), hf_logits(roundtrip, tokens)) <= TOLERANCE
    # an existing output is never replaced silently
    assert main(["export", str(ckpt), "--out", str(exported)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(exported), "--force"]) == 0  # an export of ours: replaced
    assert main(["import", "hf", str(exported), "--out", str(ckpt), "--force"]) == 0  # a checkpoint of ours too
    assert read_meta(ckpt) == {"imported_from": "hf", "source": str(exported)}
    # --force never replaces a directory we did not write, even a Hugging Face model directory
    assert main(["export", str(ckpt), "--out", str(hf_dir), "--force"]) == 1
    assert "holds files gpt2 did not write" in capsys.readouterr().err


def test_cli_export_takes_a_run_directory_and_any_other_model_source(hf_dir, tmp_path, tokens, capsys):
    model = GPT(GPTConfig.named("tiny")).eval()
    run = tmp_path / "run"
    save_model(run / "step_000004", model, {"step": 4})
    (run / "latest").write_text("step_000004\n")
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    exported = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert max_diff(hf_logits(exported, tokens), our_logits(model, tokens)[..., :GPT2_VOCAB_SIZE]) <= TOLERANCE
    # any source gpt2.load accepts: an HF directory round-trips to the same logits
    assert main(["export", str(hf_dir), "--out", str(tmp_path / "again")]) == 0
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "again").eval()
    original = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    assert max_diff(hf_logits(again, tokens), hf_logits(original, tokens)) <= TOLERANCE


def test_cli_import_seed_checkpoint(seed_config, tmp_path, capsys):
    model = GPT(GPTConfig.named("tiny"))
    path = tmp_path / "seed.pt"
    torch.save({"model": model.state_dict(), "config": seed_config(), "step": 7, "val_loss": 4.5}, path)
    out = tmp_path / "imported"
    assert main(["import", "nanogpt", str(path), "--out", str(out)]) == 0
    assert read_meta(out)["step"] == 7
    loaded = load_checkpoint(out)
    assert torch.equal(loaded.transformer.wte.weight, model.transformer.wte.weight)
    save_model(tmp_path / "unused", loaded)  # a loaded import is an ordinary model
