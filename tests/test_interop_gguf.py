"""GGUF export, read back with the gguf package's own reader and checked against independent references: llama.cpp's
tensor names written out by hand (src/models/gpt2.cpp), tiktoken's bytes for every token, and a greedy continuation
computed by transformers' GPT2LMHeadModel from the read-back tensors."""

import functools

import pytest
import torch

from gpt2 import GPT, GPTConfig
from gpt2.cli import main
from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.generate import generate_token_ids
from gpt2.generate.sampling import SamplingOptions
from gpt2.interop.gguf import export_gguf
from gpt2.store.checkpoint import save_model
from gpt2.tokenizer import EOT_ID, get_tokenizer

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

QUANTS = ("f32", "f16", "q8_0")
# llama.cpp's GPT-2 tensor names (src/models/gpt2.cpp, load_arch_tensors) -> ours
GLOBAL_NAMES = {
    "token_embd.weight": "transformer.wte.weight",
    "position_embd.weight": "transformer.wpe.weight",
    "output_norm.weight": "transformer.ln_f.weight",
    "output_norm.bias": "transformer.ln_f.bias",
}
BLOCK_NAMES = {
    "attn_norm": "ln_1",
    "attn_qkv": "attn.c_attn",
    "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2",
    "ffn_up": "mlp.c_fc",
    "ffn_down": "mlp.c_proj",
}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # HF's (in, out)


def llama_names(n_layer):
    names = dict(GLOBAL_NAMES)
    for i in range(n_layer):
        for llama, ours in BLOCK_NAMES.items():
            for part in ("weight", "bias"):
                names[f"blk.{i}.{llama}.{part}"] = f"transformer.h.{i}.{ours}.{part}"
    return names


@pytest.fixture(scope="module")
def model():
    """A tiny GPT with the padded vocabulary (50304 rows), its embedding and block matrices scaled up 30x so that
    its greedy continuation varies and is decided by logit margins >= 0.05, far above float rounding."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.named("tiny")).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "transformer.wte.weight" or name.endswith(("c_attn.weight", "c_fc.weight", "c_proj.weight")):
                param.mul_(30)
    return model


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {quant: export_gguf(model, out / f"tiny-{quant}.gguf", quant, name="tiny") for quant in QUANTS}


@functools.cache  # opening a file parses 100,000 strings: seconds, so once per file
def read_back(path):
    """(metadata field -> value, our key -> (float32 tensor, GGML type name)) of a GGUF file."""
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    names = llama_names(fields["gpt2.block_count"])
    tensors = {}
    for t in reader.tensors:
        array = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy())
        assert list(array.shape) == [int(n) for n in reversed(t.shape)], t.name  # ggml lists dimensions reversed
        tensors[names[t.name]] = (array, t.tensor_type.name)
    return fields, tensors


def ours(model):
    state = {k: v.detach() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state["transformer.wte.weight"] = state["transformer.wte.weight"][:GPT2_VOCAB_SIZE]
    return state


def test_f32_tensors_are_ours_exactly_under_llama_cpp_names(model, files):
    _, tensors = read_back(files["f32"])
    expected = ours(model)
    assert set(tensors) == set(expected) == set(llama_names(model.config.n_layer).values())
    for key, (array, qtype) in tensors.items():
        assert qtype == "F32"
        assert torch.equal(array, expected[key]), key
    assert tensors["transformer.wte.weight"][0].shape == (GPT2_VOCAB_SIZE, 64)  # the padding rows are dropped


def quantised(key, array):
    """convert_hf_to_gguf's rule: 2-D ``.weight`` matrices except the position embedding are quantised."""
    return array.dim() == 2 and key.endswith(".weight") and key != "transformer.wpe.weight"


def test_f16_tensors_are_ours_rounded_to_f16(model, files):
    _, tensors = read_back(files["f16"])
    expected = ours(model)
    for key, (array, qtype) in tensors.items():
        if quantised(key, array):
            assert qtype == "F16", key
            assert torch.equal(array, expected[key].half().float()), key
        else:
            assert (qtype, torch.equal(array, expected[key])) == ("F32", True), key


def test_q8_0_tensors_are_within_the_block_error_bound(model, files):
    _, tensors = read_back(files["q8_0"])
    expected = ours(model)
    worst = 0.0
    for key, (array, qtype) in tensors.items():
        if not quantised(key, array):
            assert (qtype, torch.equal(array, expected[key])) == ("F32", True), key
            continue
        assert qtype == "Q8_0", key
        # Q8_0: blocks of 32 along a row, scale d = max|x| / 127 stored as f16, x ~ d * round(x / d).
        # Error <= d / 2 (rounding) + 127 * |d - f16(d)| (the scale's own rounding, <= 2^-11 relative).
        blocks, back = expected[key].reshape(-1, 32), array.reshape(-1, 32)
        d = blocks.abs().amax(dim=1, keepdim=True) / 127
        error = (blocks - back).abs()
        assert (error <= d * (0.5 + 127 * 2**-11) + 1e-12).all(), key
        worst = max(worst, (error / d.clamp_min(1e-30)).max().item())
    assert worst > 0.3  # really quantised (not written as floats): some value lands near half a step off


def test_metadata(model, files):
    fields, _ = read_back(files["q8_0"])
    cfg = model.config
    assert (fields["general.architecture"], fields["general.name"]) == ("gpt2", "tiny")
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    expected = {"block_count": 2, "context_length": 128, "embedding_length": 64, "feed_forward_length": 256}
    assert (
        {k: fields[f"gpt2.{k}"] for k in expected}
        == expected
        == {
            "block_count": cfg.n_layer,
            "context_length": cfg.block_size,
            "embedding_length": cfg.n_embd,
            "feed_forward_length": 4 * cfg.n_embd,
        }
    )
    assert fields["gpt2.attention.head_count"] == cfg.n_head
    assert fields["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert (fields["tokenizer.ggml.model"], fields["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    assert fields["tokenizer.ggml.bos_token_id"] == fields["tokenizer.ggml.eos_token_id"] == EOT_ID
    assert fields["tokenizer.ggml.add_bos_token"] is False
    # Every token string is tiktoken's bytes for that id in GPT-2's byte-to-unicode alphabet.
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == GPT2_VOCAB_SIZE
    to_byte = {char: byte for byte, char in gguf.vocab.bytes_to_unicode().items()}
    tok = get_tokenizer()
    for i in range(EOT_ID):
        assert bytes(to_byte[c] for c in tokens[i]) == tok.decode_bytes([i]), i
    assert tokens[EOT_ID] == "<|endoftext|>"
    assert types == [gguf.TokenType.NORMAL] * EOT_ID + [gguf.TokenType.CONTROL]
    # 50,000 merges in rank order: GPT-2's token 256 + r is the pair that merge r joins.
    merges = fields["tokenizer.ggml.merges"]
    assert len(merges) == 50_000 and merges[0] == "Ġ t"
    assert all(tokens[256 + r] == m.replace(" ", "") for r, m in enumerate(merges))


def hf_model_from_gguf(path):
    """A transformers GPT2LMHeadModel built only from what the GGUF file holds."""
    fields, tensors = read_back(path)
    config = transformers.GPT2Config(
        vocab_size=len(fields["tokenizer.ggml.tokens"]),
        n_positions=fields["gpt2.context_length"],
        n_embd=fields["gpt2.embedding_length"],
        n_layer=fields["gpt2.block_count"],
        n_head=fields["gpt2.attention.head_count"],
        n_inner=fields["gpt2.feed_forward_length"],
        layer_norm_epsilon=fields["gpt2.attention.layer_norm_epsilon"],
        activation_function="gelu_new",
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    state = {k: v.t() if k.endswith(CONV1D) else v for k, (v, _) in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to transformer.wte.weight
    return model


def hf_greedy(model, prompt, n):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids[0, len(prompt) :].tolist()


def test_greedy_continuation_from_the_f32_file_equals_ours(model, files):
    prompt = get_tokenizer().encode("The meaning of life is")
    options = SamplingOptions(max_new_tokens=24, temperature=0.0)
    expected = [step[0] for step in generate_token_ids(model, prompt, options, stop_at_eot=False)]
    assert len(set(expected)) > 3  # a real continuation, not one token repeated
    assert hf_greedy(hf_model_from_gguf(files["f32"]), prompt, 24) == expected


def test_cli_exports_a_checkpoint_and_replaces_a_file_only_with_force(model, files, tmp_path, capsys):
    ckpt = tmp_path / "tiny"  # the file's general.name
    save_model(ckpt, model, {})
    out = tmp_path / "m.gguf"
    assert main(["export", str(ckpt), "--format", "gguf", "--quant", "q8_0", "--out", str(out)]) == 0
    assert "GGUF q8_0" in capsys.readouterr().out
    assert out.read_bytes() == files["q8_0"].read_bytes()  # the writer is deterministic
    assert main(["export", str(ckpt), "--format", "gguf", "--out", str(out)]) == 1  # exists: needs --force
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == files["q8_0"].read_bytes()
    assert main(["export", str(ckpt), "--format", "gguf", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() == files["f32"].read_bytes()  # replaced, by the default f32
