"""The GPT-2 model: sizes, forward/loss semantics, KV cache, init, tying, optimizer groups, FLOPs."""

import dataclasses

import pytest
import torch

from gpt2 import GPT, GPT2Error, GPTConfig
from gpt2.config import CONFIGS, GPT2_VOCAB_SIZE
from gpt2.model import IGNORE_INDEX, KVCache, optimizer_param_groups

# Published parameter counts: the right column is what Hugging Face reports for OpenAI's checkpoints
# (vocab 50257); the left one is the same model with the vocabulary padded to 50304 (+47 rows of n_embd).
EXPECTED_PARAMETERS = {
    "124M": (124_475_904, 124_439_808),
    "350M": (354_871_296, 354_823_168),
    "774M": (774_090_240, 774_030_080),
    "1558M": (1_557_686_400, 1_557_611_200),
}


def meta_model(config: GPTConfig) -> GPT:
    with torch.device("meta"):  # shapes only: even 1558M costs no memory
        return GPT(config)


def formula_parameters(config: GPTConfig) -> int:
    """Count by hand: embeddings + per block (2 LayerNorms, qkv, attn proj, MLP up/down) + final LayerNorm."""
    C = config.n_embd
    per_block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    return config.vocab_size * C + config.block_size * C + config.n_layer * per_block + 2 * C


@pytest.mark.parametrize("name", list(EXPECTED_PARAMETERS))
def test_registry_parameter_counts(name):
    padded, hf_vocab = EXPECTED_PARAMETERS[name]
    config = GPTConfig.named(name)
    assert meta_model(config).num_parameters() == padded
    assert meta_model(dataclasses.replace(config, vocab_size=GPT2_VOCAB_SIZE)).num_parameters() == hf_vocab


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_matches_formula(name):
    config = GPTConfig.named(name)
    assert meta_model(config).num_parameters() == formula_parameters(config)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig.named("tiny")).eval()


def random_tokens(batch, length, seed=0):
    return torch.randint(0, GPT2_VOCAB_SIZE, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_forward_shapes(tiny):
    idx = random_tokens(3, 17)
    with torch.no_grad():
        logits, loss = tiny(idx)
        last, _ = tiny(idx, logits_at=-1)
        third, _ = tiny(idx, logits_at=2)
    assert logits.shape == (3, 17, 50304) and loss is None
    assert last.shape == (3, 1, 50304) and third.shape == (3, 1, 50304)
    torch.testing.assert_close(last[:, 0], logits[:, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(third[:, 0], logits[:, 2], atol=1e-5, rtol=0)


def test_logits_at_a_position_mask(tiny):
    idx = random_tokens(2, 9, seed=3)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 5:] = True  # rows may select different numbers of positions
    mask[1, 2] = True
    with torch.no_grad():
        full, _ = tiny(idx)
        picked, loss = tiny(idx, logits_at=mask)
    assert picked.shape == (5, 50304) and loss is None
    torch.testing.assert_close(picked, full[mask], atol=1e-5, rtol=0)  # row-major order: row 0's, then row 1's


def test_bad_logits_at_is_an_error(tiny):
    idx = random_tokens(2, 9)
    with pytest.raises(GPT2Error, match="logits_at=9 is outside the 9 input positions"):
        tiny(idx, logits_at=9)
    with pytest.raises(GPT2Error, match=r"must be an int or a \(2, 9\) bool tensor, got torch.int64"):
        tiny(idx, logits_at=torch.tensor([1, 2]))
    with pytest.raises(GPT2Error, match="the loss needs the logits of every position"):
        tiny(idx, idx, logits_at=-1)


def test_loss_is_mean_cross_entropy_and_ignores_minus_one(tiny):
    idx, targets = random_tokens(2, 12, seed=1), random_tokens(2, 12, seed=2)
    with torch.no_grad():
        logits, loss = tiny(idx, targets)
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert loss.item() == pytest.approx(-picked.mean().item(), rel=1e-5)
    # Random init: every token about equally likely, so the loss is close to ln(V).
    assert loss.item() == pytest.approx(torch.log(torch.tensor(50304.0)).item(), abs=0.2)

    masked = targets.clone()
    masked[0, :5] = IGNORE_INDEX
    masked[1, -3:] = IGNORE_INDEX
    with torch.no_grad():
        _, masked_loss = tiny(idx, masked)
    keep = masked != IGNORE_INDEX
    assert IGNORE_INDEX == -1
    assert masked_loss.item() == pytest.approx(-picked[keep].mean().item(), rel=1e-5)


def test_kv_cache_matches_full_forward(tiny):
    idx = random_tokens(2, 12, seed=3)
    with torch.no_grad():
        full, _ = tiny(idx)
        cache = KVCache.empty(tiny.config, batch_size=2, max_len=12, device="cpu", dtype=torch.float32)
        pieces = [tiny(idx[:, :5], kv_cache=cache)[0]]  # prefill
        pieces.append(tiny(idx[:, 5:9], kv_cache=cache)[0])  # a chunk of several tokens after the prefix
        for t in range(9, 12):  # then one token at a time
            pieces.append(tiny(idx[:, t : t + 1], kv_cache=cache)[0])
    assert cache.lengths.tolist() == [12, 12]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(GPT2Error, match="KV cache full"), torch.no_grad():
        tiny(idx[:, :1], kv_cache=cache)


def test_kv_cache_rows_at_different_lengths_and_rewind(tiny):
    """One visibility rule: rows at different lengths, fed several tokens at once, each compute what their own
    full forward does; lowering a row's length rewinds it (what a slide or a rejected draft token needs)."""
    idx = random_tokens(2, 12, seed=4)
    with torch.no_grad():
        full, _ = tiny(idx)
        cache = KVCache.empty(tiny.config, batch_size=2, max_len=12, device="cpu", dtype=torch.float32)
        for row, prefix in ((0, 5), (1, 2)):  # each row's prefix through a view of its row: lengths 5 and 2
            view = KVCache(cache.k[:, row : row + 1], cache.v[:, row : row + 1], cache.lengths[row : row + 1])
            tiny(idx[row : row + 1, :prefix], kv_cache=view)
        assert cache.lengths.tolist() == [5, 2]
        mixed, _ = tiny(torch.stack([idx[0, 5:8], idx[1, 2:5]]), kv_cache=cache)  # 3 new tokens per row
        torch.testing.assert_close(mixed, torch.stack([full[0, 5:8], full[1, 2:5]]), atol=1e-5, rtol=1e-5)
        tiny(random_tokens(2, 3, seed=9), kv_cache=cache)  # 3 tokens that will be rejected
        cache.lengths -= 3  # rewind: their keys stay in the cache but are never seen again
        again, _ = tiny(torch.stack([idx[0, 8:10], idx[1, 5:7]]), kv_cache=cache)
        torch.testing.assert_close(again, torch.stack([full[0, 8:10], full[1, 5:7]]), atol=1e-5, rtol=1e-5)


def test_sequence_longer_than_context_is_an_error(tiny):
    with pytest.raises(GPT2Error, match="exceeds the context window \\(128 tokens\\)"):
        tiny(random_tokens(1, 129))
    with pytest.raises(GPT2Error, match="exceeds the context window"):
        KVCache.empty(tiny.config, 1, 129, "cpu", torch.float32)


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, n_layer=8, n_head=4, n_embd=128)
    model = GPT(config)
    block = model.transformer.h[3]
    residual_std = 0.02 / (2 * config.n_layer) ** 0.5  # 0.005
    for linear in (block.attn.c_proj, block.mlp.c_proj):
        assert linear.weight.std().item() == pytest.approx(residual_std, rel=0.03)
    for linear in (block.attn.c_attn, block.mlp.c_fc):
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert torch.count_nonzero(block.mlp.c_fc.bias) == 0
    assert torch.equal(block.ln_1.weight, torch.ones(128)) and torch.count_nonzero(block.ln_1.bias) == 0


def test_weight_tying(tiny):
    assert tiny.lm_head.weight is tiny.transformer.wte.weight
    model = GPT(GPTConfig.named("tiny"))
    _, loss = model(random_tokens(1, 8), random_tokens(1, 8, seed=5))
    loss.backward()
    # the shared matrix receives gradient from the input side (rows of used tokens) and the output side (all rows)
    assert model.transformer.wte.weight.grad is model.lm_head.weight.grad
    assert torch.count_nonzero(model.transformer.wte.weight.grad.abs().sum(dim=1)) == 50304


def test_optimizer_groups_decay_only_matrices(tiny):
    decay, no_decay = optimizer_param_groups(tiny, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    named = dict(tiny.named_parameters())  # the tied matrix appears once
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)
    # per block: c_attn, attn.c_proj, c_fc, mlp.c_proj matrices; plus wte and wpe
    assert len(decay["params"]) == 4 * tiny.config.n_layer + 2
    total = sum(p.numel() for group in (decay, no_decay) for p in group["params"])
    assert total == tiny.num_parameters()


def test_flops_per_token():
    model = meta_model(GPTConfig.named("124M"))
    flops = model.flops_per_token(1024)
    assert flops == 6 * 124_475_904 + 12 * 12 * 768 * 1024
    assert flops == pytest.approx(0.86e9, rel=0.01)
    assert model.flops_per_token() == flops  # defaults to the context window


def test_dropout_acts_only_in_training_mode(tiny):
    from gpt2.store.checkpoint import model_from_state_dict

    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    dropped = model_from_state_dict(dataclasses.replace(tiny.config, dropout=0.5), state, "tiny").eval()
    assert {type(m).__name__ for m in dropped.modules()} >= {"Dropout"} and not list(dropped.buffers())
    idx = random_tokens(2, 24)
    with torch.no_grad():
        first, second, reference = dropped(idx)[0], dropped(idx)[0], tiny(idx)[0]
        assert torch.equal(first, second) and torch.equal(first, reference)  # eval: nothing dropped, same weights
        dropped.train()
        noisy_a, noisy_b = dropped(idx)[0], dropped(idx)[0]
    assert not torch.equal(noisy_a, noisy_b) and (noisy_a - reference).abs().mean() > 0.01
    # rate 0 in training mode: the very same numbers as eval, and no random numbers drawn
    tiny.train()
    try:
        rng = torch.get_rng_state()
        with torch.no_grad():
            assert torch.equal(tiny(idx)[0], reference)
        assert torch.equal(torch.get_rng_state(), rng)
    finally:
        tiny.eval()


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_dropout_outside_0_1_is_an_error(bad):
    with pytest.raises(GPT2Error, match=r"GPTConfig.dropout must be a probability in \[0, 1\)"):
        GPTConfig(dropout=bad)
