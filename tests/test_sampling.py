import math

import pytest
import torch

from gpt2 import GPT2Error
from gpt2.generate.sampling import (
    MIN_TEMPERATURE,
    PENALTY_RANGE,
    SERVED,
    SamplingOptions,
    apply_repetition_penalty,
    pick_next_tokens,
    top_k_candidates,
    top_p_filter,
)


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


@pytest.mark.parametrize(
    "p, kept",
    [(0.4, [0]), (0.5, [0]), (0.7, [0, 1]), (0.85, [0, 1, 2]), (0.99, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])],
)
def test_top_p_keeps_smallest_set_reaching_p(p, kept):
    # shuffled order so the filter must sort: probabilities 0.15, 0.5, 0.05, 0.3 -> ranks 2, 0, 3, 1
    probs = [0.15, 0.5, 0.05, 0.3]
    rank_to_index = [1, 3, 0, 2]
    out = top_p_filter(logits_of(probs), p)
    kept_indices = sorted(rank_to_index[r] for r in kept)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == kept_indices
    assert torch.equal(out[0, kept_indices], logits_of(probs)[0, kept_indices])  # survivors unchanged


def test_top_p_works_per_row():
    logits = torch.cat([logits_of([0.9, 0.05, 0.05]), logits_of([0.4, 0.3, 0.3])])
    out = top_p_filter(logits, 0.8)
    assert torch.isfinite(out).tolist() == [[True, False, False], [True, True, True]]


def test_top_k_candidates():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    values, ids = top_k_candidates(logits, 2)
    assert values.tolist() == [[5.0, 4.0]] and ids.tolist() == [[1, 3]]
    assert top_k_candidates(logits, 10)[1].tolist() == [[1, 3, 2, 4, 0]]


def test_top_k_sampling_only_picks_candidates():
    logits = torch.tensor([[0.0, 3.0, 0.0, 2.9, 0.0, 2.8]]).expand(500, -1)
    gen = torch.Generator().manual_seed(0)
    picked = pick_next_tokens(logits, torch.zeros(500, 1, dtype=torch.long), SamplingOptions(top_k=2), gen)
    assert set(picked.tolist()) == {1, 3}
    picked = pick_next_tokens(logits, torch.zeros(500, 1, dtype=torch.long), SamplingOptions(top_k=3, top_p=0.3), gen)
    assert set(picked.tolist()) == {1}  # 1 alone has mass ~0.36 >= 0.3 among the 3 candidates


def test_repetition_penalty_as_in_ctrl():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    context = torch.tensor([[0, 1, 1]])
    assert apply_repetition_penalty(logits, context, 2.0).tolist() == [[1.0, -4.0, 1.0, 0.5]]


def test_pick_ignores_padded_vocab_rows():
    logits = torch.zeros(1, 50304)
    logits[0, 50300] = 100.0  # a padding row: never a real token
    logits[0, 7] = 1.0
    assert pick_next_tokens(logits, torch.zeros(1, 1, dtype=torch.long), SamplingOptions(temperature=0), None) == 7


def test_top_k_one_sampling_is_greedy():
    logits = torch.randn(4, 50257, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    ctx = torch.zeros(4, 1, dtype=torch.long)
    sampled = pick_next_tokens(logits, ctx, SamplingOptions(temperature=1.5, top_k=1), gen)
    assert torch.equal(sampled, logits.argmax(-1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 10**9}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": -3}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": 1e-300}, "repetition_penalty"),
        ({"temperature": 1e-300}, "temperature must be 0 \\(greedy\\) or at least 0.01"),
        ({"temperature": 0.009}, "at least 0.01"),
        ({"max_new_tokens": 513, "limits": SERVED}, "max_new_tokens must be between 1 and 512"),
        ({"num_samples": 5, "limits": SERVED}, "num_samples must be between 1 and 4"),
        ({"stop": ["a", "b", "c", "d", "e"], "limits": SERVED}, "at most 4 stop strings"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"stop": 5}, "stop"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 1000}, "num_samples"),
        ({"seed": -1}, "seed"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_invalid_options_rejected(kwargs, message):
    with pytest.raises(GPT2Error, match=message):
        SamplingOptions.from_arguments(**kwargs)


def test_from_arguments_normalises():
    options = SamplingOptions.from_arguments(top_k=0, stop="\n")
    assert options.top_k is None and options.stop == ("\n",)


def test_option_errors_name_the_option():
    with pytest.raises(GPT2Error) as info:
        SamplingOptions.from_arguments(num_samples=9, limits=SERVED)
    assert info.value.option == "num_samples"
    assert SamplingOptions.from_arguments(max_new_tokens=8.0, top_k=50.0).max_new_tokens == 8  # a slider's floats


@pytest.mark.parametrize("penalty", PENALTY_RANGE)
def test_bounded_options_cannot_make_nan_from_huge_finite_logits(penalty):
    """At the smallest temperature and either end of the penalty range, logits near float32's limit still give
    a valid draw (the largest wins). Dividing before shifting made 3e37 / 0.01 = inf, and inf - inf = NaN."""
    logits = torch.tensor([[3e37, -3e37, 1e30, 0.0]]).expand(3, -1)
    context = torch.tensor([[0, 1]] * 3)
    for top_p in (None, 0.5):
        options = SamplingOptions(temperature=MIN_TEMPERATURE, repetition_penalty=penalty, top_p=top_p)
        picked = pick_next_tokens(logits, context, options, torch.Generator().manual_seed(0))
        assert picked.tolist() == [0, 0, 0]
