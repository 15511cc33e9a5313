"""Batched continuation scoring: equal to an independent lm-eval-style computation with transformers."""

import json

import pytest
import torch

import gpt2
from evaluate_helpers import (
    ITEMS,
    LN_VOCAB,
    SHARED_HELLASWAG,
    hf_tokenizer,
    reference_loglikelihood,
    save_hf_model,
    tiny_model,
    uniform_model,
)
from gpt2 import GPT2Error
from gpt2.evaluate.hellaswag import HellaSwagItem, score_items
from gpt2.evaluate.scoring import EncodedRequest, check_model_vocab, encode_pair, score_requests
from gpt2.tokenizer import get_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _items():
    items = [HellaSwagItem(r["ctx"], tuple(r["endings"]), r["label"]) for r in ITEMS]
    if SHARED_HELLASWAG.is_file():  # a few real items too, when ../shared/data is there
        with open(SHARED_HELLASWAG) as f:
            for _, line in zip(range(3), f, strict=False):
                r = json.loads(line)
                items.append(HellaSwagItem(r["ctx"], tuple(r["endings"]), r["label"]))
    return items


def _compare_with_transformers(hf_path, items, batch_size):
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(hf_path).eval()
    ours = gpt2.load(str(hf_path))
    tokenizer = hf_tokenizer(hf_path.parent / "tokenizer")
    scores = score_items(ours, items, batch_size=batch_size)
    worst = 0.0
    for item, score in zip(items, scores, strict=True):
        for ending, logprob in zip(item.endings, score.logprobs, strict=True):
            expected = reference_loglikelihood(hf_model, tokenizer, item.ctx, " " + ending, hf_model.config.n_positions)
            worst = max(worst, abs(expected - logprob))
    return worst


def test_loglikelihoods_match_transformers_per_item(tmp_path):
    worst = _compare_with_transformers(save_hf_model(tmp_path / "hf"), _items(), batch_size=4)
    assert worst <= 1e-4


def test_long_contexts_are_truncated_from_the_left_like_lm_eval(tmp_path):
    # 12 positions: every row (context + ending) is longer than 13 tokens, so all are truncated.
    items = [HellaSwagItem(r["ctx"], tuple(r["endings"]), r["label"]) for r in ITEMS]
    tok = get_tokenizer()
    assert all(len(tok.encode(item.ctx + " " + ending)) > 13 for item in items for ending in item.endings)
    assert _compare_with_transformers(save_hf_model(tmp_path / "hf12", n_positions=12), items, batch_size=2) <= 1e-4


def test_batched_equals_unbatched():
    model = tiny_model(seed=3)
    items = _items()
    one = score_items(model, items, batch_size=1)
    many = score_items(model, items, batch_size=len(items))
    for a, b in zip(one, many, strict=True):
        assert a.num_tokens == b.num_tokens
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-5


def test_uniform_model_costs_ln_50257_per_token():
    # Padded vocab rows (50257..50303) must not take probability mass: ln(50304) would be wrong.
    request = encode_pair(get_tokenizer(), "The cat sat on the", " mat today.")
    (score,) = score_requests(uniform_model(), [request])
    assert score.num_tokens == len(request.continuation) == 3
    assert score.logprob == pytest.approx(-3 * LN_VOCAB, abs=1e-4)


def test_encode_pair_follows_lm_eval():
    tok = get_tokenizer()
    plain = encode_pair(tok, "Hello there", " world")
    assert plain == EncodedRequest(tok.encode("Hello there"), tok.encode(" world"))
    # trailing context whitespace moves to the continuation before encoding
    spaced = encode_pair(tok, "Hello there ", "world")
    assert spaced == plain
    # an empty context becomes <|endoftext|>
    assert encode_pair(tok, "", " world") == EncodedRequest([tok.eot_id], tok.encode(" world"))


def test_too_long_continuation_and_small_vocab_are_errors():
    model = tiny_model(block_size=8)
    long = EncodedRequest([1, 2], list(range(100, 120)))
    with pytest.raises(GPT2Error, match="item.jsonl:7: continuation of 20 tokens"):
        score_requests(model, [long], names=["item.jsonl:7"])
    model.lm_head = torch.nn.Linear(64, 1000, bias=False)
    with pytest.raises(GPT2Error, match="1000 output tokens"):
        check_model_vocab(model)
