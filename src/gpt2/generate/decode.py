"""Text generation: prefill the prompt once, then decode one token at a time with a KV cache.

The seed's generation loop re-ran the whole sequence through the model for every new token
(O(T^2) work per sample). Here the prompt is run once ("prefill"), filling a preallocated
:class:`~gpt2.model.KVCache` with every layer's keys and values; each later step feeds only
the newest token, whose query attends to the cached positions.

Layers, bottom up:

* :mod:`gpt2.generate.sampling`: the options and logit filters (temperature, top-k, top-p, repetition penalty).
* :func:`generate_token_ids`: the decode loop over token ids (several samples in one batch).
* :class:`TextAssembler`: token ids -> text pieces that never split a UTF-8 character and
  stop before a stop string.
* :func:`stream_samples` / :func:`stream` / :func:`generate`: the public text API.

Context window: a prompt longer than the window is truncated from the left so that room is
left for new tokens (reported through ``on_notice``). If generation fills the window, we
*slide*: the cache is rebuilt from the last 3/4 of the window (one re-prefill) and decoding
continues, so every new token still sees at least 3/4 of a window of context.
"""

from __future__ import annotations

import codecs
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch

from gpt2.errors import GPT2Error
from gpt2.generate.sampling import SamplingOptions, pick_next_tokens
from gpt2.model import GPT, KVCache
from gpt2.runtime.device import model_device
from gpt2.runtime.parallel import unwrap_model
from gpt2.tokenizer import Tokenizer, get_tokenizer

SLIDE_KEEP_FRACTION = 0.75  # when the window is full, keep this much of it as context and re-prefill


class GenerationNotice(UserWarning):
    """Something the user should know about a generation (e.g. the prompt was truncated)."""


def _default_notice(message: str) -> None:
    warnings.warn(message, GenerationNotice, stacklevel=4)


# ---------------------------------------------------------------------------------------------
# The decode loop over token ids.


def fit_prompt(
    prompt_ids: Sequence[int], block_size: int, max_new_tokens: int, on_notice: Callable[[str], None] | None = None
) -> list[int]:
    """The prompt tokens to feed: an empty prompt becomes ``<|endoftext|>`` (unconditional sampling, as GPT-2
    was trained with documents separated by it); a prompt that leaves no room for new tokens is cut from the
    left to ``block_size - min(max_new_tokens, block_size // 2)`` tokens and ``on_notice`` is told."""
    ids = list(prompt_ids) or [get_tokenizer().eot_id]
    room = min(max_new_tokens, block_size // 2)
    limit = block_size - room
    if len(ids) > limit:
        (on_notice or _default_notice)(
            f"prompt has {len(ids)} tokens; kept the last {limit} so that {room} new tokens fit "
            f"in the model's {block_size}-token context window"
        )
        ids = ids[-limit:]
    return ids


def _prefill(model: GPT, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    cache.pos = 0
    logits, _ = model(tokens, kv_cache=cache, logits_at=-1)
    return logits[:, -1, :]


@torch.inference_mode()
def generate_token_ids(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    options: SamplingOptions,
    *,
    device: torch.device | str | None = None,
    stop_at_eot: bool = True,
    use_cache: bool = True,
    on_notice: Callable[[str], None] | None = None,
) -> Iterator[list[int]]:
    """Yield, step by step, the next token id of each of ``options.num_samples`` samples (a list of B ints).

    A sample that produced ``<|endoftext|>`` keeps being decoded (the batch moves in lockstep) but the
    loop ends as soon as every sample has finished (``stop_at_eot``) or after ``max_new_tokens`` steps.
    ``use_cache=False`` recomputes the whole window every step (the seed's method; kept for tests and
    the benchmark). The sampling generator is local, so the global torch RNG is left untouched.
    """
    model = unwrap_model(model)
    config = model.config
    device = model_device(model, device)
    dtype = next(model.parameters()).dtype
    ids = fit_prompt(prompt_ids, config.block_size, options.max_new_tokens, on_notice)
    B, P, N = options.num_samples, len(ids), options.max_new_tokens
    generator = None
    if options.temperature > 0:
        generator = torch.Generator(device=device)
        if options.seed is None:
            generator.seed()  # fresh entropy from the OS, not from (and not advancing) the global RNG
        else:
            generator.manual_seed(options.seed)

    tokens = torch.empty(B, P + N, dtype=torch.long, device=device)  # prompt + everything generated
    tokens[:, :P] = torch.tensor(ids, dtype=torch.long, device=device)
    n = P  # tokens filled so far
    start = 0  # first token of the current context window (moves when we slide)
    keep = max(1, int(config.block_size * SLIDE_KEEP_FRACTION))
    cache = None
    if use_cache:
        # Prefill one copy of the prompt, then give every sample its own copy of the cache.
        max_len = min(config.block_size, P + N)
        single = KVCache.empty(config, 1, max_len, device, dtype)
        logits = _prefill(model, tokens[:1, :P], single).expand(B, -1)
        cache = KVCache(single.k.repeat(1, B, 1, 1, 1), single.v.repeat(1, B, 1, 1, 1), pos=single.pos)
    else:
        logits = model(tokens[:, :P], logits_at=-1)[0][:, -1, :]

    eot = get_tokenizer().eot_id
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(N):
        next_ids = pick_next_tokens(logits, tokens[:, start:n], options, generator)
        tokens[:, n] = next_ids
        n += 1
        yield next_ids.tolist()
        if stop_at_eot:
            finished |= next_ids == eot
            if bool(finished.all()):
                return
        if step == N - 1:
            return  # no forward pass for a token nobody will read
        if n - start > config.block_size:
            start = n - keep  # window full: slide, keeping the last `keep` tokens as context
            if cache is not None:
                logits = _prefill(model, tokens[:, start:n], cache)
                continue
        if cache is not None:
            logits = model(tokens[:, n - 1 : n], kv_cache=cache, logits_at=-1)[0][:, -1, :]
        else:
            logits = model(tokens[:, start:n], logits_at=-1)[0][:, -1, :]


# ---------------------------------------------------------------------------------------------
# Token ids -> text.


class TextAssembler:
    """Turns one sample's token ids into text pieces.

    Token bytes go through an incremental UTF-8 decoder, so a character split across tokens (emoji,
    CJK) is emitted only once complete and a piece never contains a half character. Text that could
    be the start of a stop string is held back until it is clear; at a stop string the text ends just
    before it. ``done`` is set at ``<|endoftext|>`` or a stop string.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""  # decoded, not yet emitted (a possible stop-string prefix)
        self.done = False

    def feed_bytes(self, data: bytes) -> str:
        """Add raw bytes; return the text that can be emitted now."""
        if self.done:
            return ""
        self.pending += self.decoder.decode(data)
        return self._release(final=False)

    def feed(self, token_id: int) -> str:
        """Add one token id; return the text that can be emitted now."""
        if self.done:
            return ""
        if token_id == self.tokenizer.eot_id:
            return self.finish()
        return self.feed_bytes(self.tokenizer.decode_bytes([token_id]))

    def finish(self) -> str:
        """End of the sample: flush held-back text (an incomplete trailing character becomes U+FFFD)."""
        if self.done:
            return ""
        self.pending += self.decoder.decode(b"", final=True)
        text = self._release(final=True)
        self.done = True
        return text

    def _release(self, final: bool) -> str:
        text = self.pending
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.pending, self.done = "", True
            return text[:cut]
        hold = 0 if final else self._stop_prefix_length(text)
        self.pending = text[len(text) - hold :]
        return text[: len(text) - hold]

    def _stop_prefix_length(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
        best = 0
        for s in self.stop:
            for length in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:length]):
                    best = length
                    break
        return best


def stream_samples(
    model: torch.nn.Module,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    num_samples: int = 1,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Iterator[list[str]]:
    """Generate ``num_samples`` continuations of ``prompt`` in one batch, yielding after every decode step
    a list with the new text piece of each sample (``""`` when a sample has nothing new).
    Joining a sample's pieces gives exactly its continuation in :func:`generate`.
    Options are validated at the call (a :class:`GPT2Error`), before any work is done."""
    if not isinstance(prompt, str):
        raise GPT2Error(f"prompt must be a string, got {type(prompt).__name__}")
    options = SamplingOptions.from_arguments(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        num_samples=num_samples,
        seed=seed,
        stop=stop,
    )
    tokenizer = get_tokenizer()
    steps = generate_token_ids(model, tokenizer.encode(prompt), options, device=device, on_notice=on_notice)
    return _assemble_text(steps, [TextAssembler(tokenizer, options.stop) for _ in range(num_samples)])


def _assemble_text(steps: Iterator[list[int]], texts: list[TextAssembler]) -> Iterator[list[str]]:
    try:
        for next_ids in steps:
            pieces = [text.feed(token) for text, token in zip(texts, next_ids, strict=True)]
            if any(pieces):
                yield pieces
            if all(text.done for text in texts):
                return
        pieces = [text.finish() for text in texts]  # max_new_tokens reached
        if any(pieces):
            yield pieces
    finally:
        steps.close()  # a consumer that stops early (the app's stop button) ends the decode loop


def stream(model: torch.nn.Module, prompt: str, **kwargs) -> Iterator[str]:
    """Like :func:`stream_samples` for one sample: yields the continuation as text pieces.

    Takes the same keyword arguments (``num_samples`` must be 1)."""
    if kwargs.get("num_samples", 1) != 1:
        raise GPT2Error("stream() generates one sample; use stream_samples() for several")
    return (pieces[0] for pieces in stream_samples(model, prompt, **kwargs))


def generate(model: torch.nn.Module, prompt: str, **kwargs) -> list[str]:
    """The continuations (without the prompt) of ``num_samples`` samples; keyword arguments as
    :func:`stream_samples` (max_new_tokens, temperature, top_k, top_p, repetition_penalty,
    num_samples, seed, stop, device, on_notice)."""
    pieces_per_step = stream_samples(model, prompt, **kwargs)
    results = [""] * kwargs.get("num_samples", 1)
    for pieces in pieces_per_step:
        results = [text + piece for text, piece in zip(results, pieces, strict=True)]
    return results
