"""Choosing the next token: the sampling options (the one validator and the one table of request limits) and
the logit filters (repetition penalty, temperature, top-k, top-p).

All filters take float logits of shape (B, V) and return new logits of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.errors import GPT2Error


@dataclass(frozen=True)
class Limits:
    """Upper bounds on one request, so that none can exhaust memory or run for hours. ``LIBRARY`` bounds
    ``gpt2 sample`` and the Python API; ``SERVED`` bounds ``gpt2 serve``'s page and API (CPU-friendly)."""

    max_new_tokens: int
    num_samples: int
    temperature: float
    stop_strings: int
    prompt_chars: int | None = None  # None: any prompt (a long one is cut from the left to fit the window)


LIBRARY = Limits(max_new_tokens=16384, num_samples=64, temperature=10.0, stop_strings=16)
SERVED = Limits(max_new_tokens=512, num_samples=4, temperature=2.0, stop_strings=4, prompt_chars=4000)
# The smallest temperature but 0 (greedy). Logits are divided by it after their maximum is subtracted, so
# the result is <= 0 and at worst -inf: never NaN. It must stay far above float32's smallest numbers (1e-300
# rounds to 0 in float32 and 0/0 is NaN); below 0.01 sampling is greedy for all practical purposes.
MIN_TEMPERATURE = 0.01
PENALTY_RANGE = (0.1, 10.0)  # repetition penalty: a tiny one would blow logits up to inf


def check_prompt(prompt: object, limits: Limits = LIBRARY) -> str:
    if not isinstance(prompt, str):
        raise option_error("prompt", f"prompt must be a string, got {type(prompt).__name__}")
    if limits.prompt_chars is not None and len(prompt) > limits.prompt_chars:
        raise option_error("prompt", f"the prompt has {len(prompt)} characters; the limit is {limits.prompt_chars}")
    return prompt


def option_error(name: str, message: str) -> GPT2Error:
    """A GPT2Error that names the bad option in ``.option`` (the server maps it to its own field names)."""
    error = GPT2Error(message)
    error.option = name
    return error


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens. ``temperature=0`` is greedy decoding; ``top_k``/``top_p``/``repetition_penalty``
    of None switch that filter off. Invalid values raise :class:`GPT2Error` naming the option
    (``.option``); ``limits`` sets the upper bounds."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    num_samples: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    limits: Limits = field(default=LIBRARY, compare=False, repr=False)

    @classmethod
    def from_arguments(cls, **kwargs) -> SamplingOptions:
        """Options from user-facing arguments: ``top_k=0`` also means off, ``stop`` may be one string, any
        sequence or None, whole numbers given as floats (a slider's 8.0) count as integers."""
        whole = lambda k, v: k in INTEGERS and isinstance(v, float) and v.is_integer()
        kwargs = {k: int(v) if whole(k, v) else v for k, v in kwargs.items()}
        stop = kwargs.pop("stop", None)
        stop = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, (list, tuple)) else stop or ()
        return cls(**{**kwargs, "top_k": kwargs.get("top_k") or None, "stop": stop})

    def __post_init__(self) -> None:
        limits = self.limits
        check("max_new_tokens", self.max_new_tokens, 1, limits.max_new_tokens, integer=True)
        check("temperature", self.temperature, 0.0, limits.temperature)
        if 0 < self.temperature < MIN_TEMPERATURE:
            message = f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {self.temperature!r}"
            raise option_error("temperature", message)
        if self.top_k is not None:
            check("top_k", self.top_k, 1, GPT2_VOCAB_SIZE, integer=True)
        if self.top_p is not None:
            check("top_p", self.top_p, 0.0, 1.0)
            if self.top_p == 0:
                raise option_error("top_p", "top_p must be greater than 0")
        if self.repetition_penalty is not None:
            check("repetition_penalty", self.repetition_penalty, *PENALTY_RANGE)
        check("num_samples", self.num_samples, 1, limits.num_samples, integer=True)
        if self.seed is not None:
            check("seed", self.seed, 0, 2**63 - 1, integer=True)
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise option_error("stop", "stop must be a sequence of non-empty strings")
        if len(self.stop) > limits.stop_strings:
            raise option_error("stop", f"at most {limits.stop_strings} stop strings, got {len(self.stop)}")


INTEGERS = ("max_new_tokens", "top_k", "num_samples", "seed")


def check(name: str, value: object, low: float, high: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value != value:  # bool, wrong type, NaN
        raise option_error(name, f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise option_error(name, f"{name} must be between {low} and {high}, got {value!r}")


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty (as in Hugging Face): for every token id present in ``context`` (B, T),
    divide a positive logit by ``penalty`` and multiply a negative one by it (penalty > 1 discourages repeats)."""
    scores = logits.gather(1, context)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(1, context, scores)


def logits_processors(options: SamplingOptions) -> list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """What changes the logits before temperature and sampling, in order: ``(logits, context) -> logits``,
    like Hugging Face's ``LogitsProcessorList``. The slot for frequency/presence penalties, min_p, logit_bias."""
    processors = []
    penalty = options.repetition_penalty
    if penalty is not None and penalty != 1.0:
        processors.append(lambda logits, context: apply_repetition_penalty(logits, context, penalty))
    return processors


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
    for process in logits_processors(options):
        logits = process(logits, context)
    # Else multinomial fails (on CUDA with a device assert), or argmax picks junk. Bounded options cannot
    # make finite logits overflow (a penalty of 0.1 would need a logit of 3e37), so this is the model's fault.
    if not bool(torch.isfinite(logits).all()):
        raise GPT2Error("the model's outputs are NaN/inf: its weights have diverged (train it with a lower --lr)")
    if options.temperature == 0.0:
        return logits.argmax(dim=-1)
    # Shift so the largest logit is 0 (softmax is unchanged): divided by a small temperature, the others
    # go to -inf at worst, never to inf - inf = NaN.
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / options.temperature
    token_ids = None  # candidate i is token i, unless top-k narrowed the candidates
    if options.top_k is not None:
        logits, token_ids = top_k_candidates(logits, options.top_k)
    if options.top_p is not None:
        logits = top_p_filter(logits, options.top_p)
    probs = F.softmax(logits, dim=-1)
    choice = torch.multinomial(probs, num_samples=1, generator=generator)
    return (choice if token_ids is None else token_ids.gather(1, choice)).squeeze(1)
