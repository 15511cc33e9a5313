"""Choosing the next token: sampling options and the logit filters (temperature, top-k, top-p, repetition penalty).

All filters take float logits of shape (B, V) and return new logits of the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.errors import GPT2Error

# Upper bounds that keep a single request from exhausting memory or running for hours.
MAX_NEW_TOKENS_LIMIT = 16384
MAX_SAMPLES_LIMIT = 64
MAX_TEMPERATURE = 10.0
MAX_STOP_STRINGS = 16


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens. ``temperature=0`` is greedy decoding; ``top_k``/``top_p``/``repetition_penalty``
    of None switch that filter off. Invalid values raise :class:`GPT2Error` naming the option."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    num_samples: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_arguments(
        cls,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> SamplingOptions:
        """Options from user-facing arguments: ``top_k=0`` also means off, ``stop`` may be any sequence or None."""
        if isinstance(stop, str):
            stop = [stop]
        return cls(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k or None,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            num_samples=num_samples,
            seed=seed,
            stop=tuple(stop or ()),
        )

    def __post_init__(self) -> None:
        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN

        if not is_int(self.max_new_tokens) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise GPT2Error(
                f"max_new_tokens must be an integer in [1, {MAX_NEW_TOKENS_LIMIT}], got {self.max_new_tokens!r}"
            )
        if not is_number(self.temperature) or not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise GPT2Error(f"temperature must be in [0, {MAX_TEMPERATURE}] (0 = greedy), got {self.temperature!r}")
        if self.top_k is not None and (not is_int(self.top_k) or self.top_k < 1):
            raise GPT2Error(f"top_k must be a positive integer (or None to switch it off), got {self.top_k!r}")
        if self.top_p is not None and (not is_number(self.top_p) or not 0.0 < self.top_p <= 1.0):
            raise GPT2Error(f"top_p must be in (0, 1] (or None to switch it off), got {self.top_p!r}")
        if self.repetition_penalty is not None and (
            not is_number(self.repetition_penalty) or not 0.0 < self.repetition_penalty <= MAX_TEMPERATURE
        ):
            raise GPT2Error(f"repetition_penalty must be in (0, {MAX_TEMPERATURE}], got {self.repetition_penalty!r}")
        if not is_int(self.num_samples) or not 1 <= self.num_samples <= MAX_SAMPLES_LIMIT:
            raise GPT2Error(f"num_samples must be an integer in [1, {MAX_SAMPLES_LIMIT}], got {self.num_samples!r}")
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise GPT2Error(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise GPT2Error("stop must be a sequence of non-empty strings")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise GPT2Error(f"at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty (as in Hugging Face): for every token id present in ``context`` (B, T),
    divide a positive logit by ``penalty`` and multiply a negative one by it (penalty > 1 discourages repeats)."""
    scores = logits.gather(1, context)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(1, context, scores)


def top_k_candidates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits of each row, sorted descending, and their token ids: both (B, k).

    Sampling among k candidates instead of masking all V logits keeps the later sort, softmax
    and multinomial draw small (50257 -> k per row)."""
    return torch.topk(logits, min(k, logits.size(-1)), dim=-1, sorted=True)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probabilities sum to >= ``p``
    (always at least the most likely one), set the rest to -inf."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of all strictly more likely tokens
    drop_sorted = mass_before >= p
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def pick_next_tokens(
    logits: torch.Tensor, context: torch.Tensor, options: SamplingOptions, generator: torch.Generator | None
) -> torch.Tensor:
    """Choose one token per row of ``logits`` (B, V) given the tokens so far ``context`` (B, T); returns (B,)."""
    logits = logits[:, :GPT2_VOCAB_SIZE].float()  # padded vocab rows (50257..50303) are never real tokens
    if not bool(torch.isfinite(logits).all()):  # else multinomial fails with a torch error, or argmax picks junk
        raise GPT2Error("the model's outputs are NaN/inf: its weights have diverged (train it with a lower --lr)")
    if options.repetition_penalty is not None and options.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, context, options.repetition_penalty)
    if options.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / options.temperature
    token_ids = None  # candidate i is token i, unless top-k narrowed the candidates
    if options.top_k is not None:
        logits, token_ids = top_k_candidates(logits, options.top_k)
    if options.top_p is not None:
        logits = top_p_filter(logits, options.top_p)
    probs = F.softmax(logits, dim=-1)
    choice = torch.multinomial(probs, num_samples=1, generator=generator)
    return (choice if token_ids is None else token_ids.gather(1, choice)).squeeze(1)
