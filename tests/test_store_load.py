"""``gpt2.load``: each kind of source goes to its loader and gives the same weights; anything else is a clear error."""

import re
import time

import pytest
import torch

import gpt2
from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.store.checkpoint import save_model
from gpt2.store.load import load

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """No test may touch the network: the hub is unreachable here and retries would cost ~25 s."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig.named("tiny")).eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(1))


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens)[0]


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_package_root_exports_this_load():
    assert gpt2.load is load


def test_our_checkpoint_directory(tmp_path, model):
    ckpt = save_model(tmp_path / "ckpt", model, {"step": 3})
    loaded = load(ckpt)
    assert isinstance(loaded, GPT) and not loaded.training
    assert_same_weights(loaded, model)
    assert load(str(ckpt), device="meta").transformer.wte.weight.is_meta  # device is passed on


def test_run_directory_loads_its_latest_checkpoint(tmp_path, model):
    run = tmp_path / "run"
    save_model(run / "step_000010", GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32)), {"step": 10})
    save_model(run / "step_000020", model, {"step": 20})
    (run / "latest").write_text("step_000020\n")
    assert_same_weights(load(run), model)
    (run / "latest").write_text("step_000010\n")
    assert load(run).config.n_layer == 1
    (run / "latest").write_text("step_000030")
    with pytest.raises(GPT2Error, match="points to 'step_000030', which does not exist"):
        load(run)


def test_hugging_face_directory(tmp_path, tokens):
    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128))
    hf_model.save_pretrained(tmp_path / "hf")
    loaded = load(tmp_path / "hf")
    assert isinstance(loaded, GPT) and not loaded.training
    assert loaded.config == GPTConfig(block_size=128, vocab_size=50257, n_layer=2, n_head=2, n_embd=64)
    with torch.no_grad():
        reference = hf_model.eval()(tokens).logits
    assert (logits(loaded, tokens) - reference).abs().max().item() < 1e-4


def test_nanogpt_pt_file(tmp_path, model, tokens):
    args = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128, "vocab_size": 50304}
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}  # as saved from a torch.compile'd model
    for suffix in (".pt", ".pth", ".ckpt"):
        path = tmp_path / f"ckpt{suffix}"
        torch.save({"model": state, "model_args": args, "step": 5}, path)
        loaded = load(path)
        assert not loaded.training and torch.equal(logits(loaded, tokens), logits(model, tokens))


def test_unknown_sources_are_clear_errors(tmp_path):
    with pytest.raises(GPT2Error, match="model not found: .*nope"):
        load(str(tmp_path / "nope"))
    with pytest.raises(GPT2Error, match="model not found: ./missing-dir"):
        load("./missing-dir")
    for spec in ("runs/demo/rnu", "missing.pt", "my model", "run\\dir"):  # no hub id: fail before any hub code
        with pytest.raises(GPT2Error, match=f"model not found: {re.escape(spec)} \\(no such file or directory\\)$"):
            load(spec)
    (tmp_path / "runs").mkdir()
    with pytest.raises(GPT2Error, match="model not found: runs/dmeo"):  # owner/name shaped, but runs/ is local
        load_in(tmp_path, "runs/dmeo")
    with pytest.raises(GPT2Error, match="neither a checkpoint, a run directory nor a Hugging Face model directory"):
        load(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(GPT2Error, match="weights.bin: unsupported model file"):
        load(tmp_path / "weights.bin")
    # A bare name or org/name is a hub name: it goes to transformers, which cannot reach the hub here.
    with pytest.raises(GPT2Error, match="'no-such-org/no-such-gpt2' from the Hugging Face Hub"):
        load("no-such-org/no-such-gpt2")


def load_in(directory, spec):
    import os

    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return load(spec)
    finally:
        os.chdir(cwd)


def test_hub_name_comes_from_the_hf_cache_else_one_short_retry(tmp_path, monkeypatch, model, tokens):
    """A hub name with the hub unreachable (a closed loopback port, never the real network): a model in the
    HF cache loads without the network; an uncached one fails after one short retry, not ~25 s of backoff."""
    import huggingface_hub.constants

    from gpt2.interop.hf import export_hf

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # The HF cache layout: models--owner--name/{refs/main, snapshots/<commit>/files}.
    snapshot = tmp_path / "hub" / "models--someone--tiny-gpt2" / "snapshots" / ("0" * 40)
    export_hf(model, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    cached = load("someone/tiny-gpt2")  # export keeps GPT-2's 50,257 real tokens of our padded 50,304
    assert torch.allclose(logits(cached, tokens), logits(model, tokens)[..., :50257], atol=1e-5)

    start = time.monotonic()
    unreachable = (
        r"'someone/other' from the Hugging Face Hub.*not in the HF cache, and no answer from http://127.0.0.1:9"
    )
    with pytest.raises(GPT2Error, match=unreachable):
        load("someone/other")
    assert time.monotonic() - start < 10  # one retry after 1 s (huggingface_hub alone retries for ~25 s)
