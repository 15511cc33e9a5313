"""Text generation, the public API: prefill the prompt once, then decode one token at a time with a KV cache.

build-nanogpt's generation loop re-ran the whole sequence through the model for every new token (O(T^2)
work per sample). Here the prompt is run once ("prefill"), filling a preallocated
:class:`~gpt2.model.KVCache` with every layer's keys and values; each later step feeds only the newest
token, whose query attends to the cached positions. The loop is :mod:`gpt2.generate.batch`'s (the same
one the server batches requests with); the options and filters are :mod:`gpt2.generate.sampling`'s.

Context window: a prompt longer than the window is truncated from the left so that room is left for new
tokens (reported through ``on_notice``). If generation fills the window, we *slide*: the cache is rebuilt
from the last 3/4 of the window (one re-prefill) and decoding continues, so every new token still sees at
least 3/4 of a window of context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from gpt2.errors import GPT2Error
from gpt2.generate.batch import decode_steps
from gpt2.generate.sampling import SamplingOptions, check_prompt
from gpt2.tokenizer import get_tokenizer


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
    ``use_cache=False`` recomputes the whole window every step (build-nanogpt's method; kept for tests and
    the benchmark). The sampling generator is local, so the global torch RNG is left untouched.
    """
    stop_ids = None if stop_at_eot else ()
    kwargs = dict(device=device, stop_ids=stop_ids, use_cache=use_cache, on_notice=on_notice)
    for step in decode_steps(model, prompt_ids, options, **kwargs):
        yield step.token_ids


def stream_samples(
    model: torch.nn.Module,
    prompt: str,
    *,
    device: torch.device | str | None = None,
    on_notice: Callable[[str], None] | None = None,
    **options,
) -> Iterator[list[str]]:
    """Generate ``num_samples`` continuations of ``prompt`` in one batch, yielding after every decode step
    a list with the new text piece of each sample (``""`` when a sample has nothing new).
    ``options`` are :class:`SamplingOptions`' (max_new_tokens, temperature, top_k, top_p, repetition_penalty,
    num_samples, seed, stop); they are validated at the call (a :class:`GPT2Error`), before any work is done.
    Joining a sample's pieces gives exactly its continuation in :func:`generate`."""
    check_prompt(prompt)
    sampling = SamplingOptions.from_arguments(**options)
    steps = decode_steps(model, get_tokenizer().encode(prompt), sampling, device=device, on_notice=on_notice)
    return (step.text for step in steps if any(step.text))


def stream(model: torch.nn.Module, prompt: str, **kwargs) -> Iterator[str]:
    """Like :func:`stream_samples` for one sample: yields the continuation as text pieces.

    Takes the same keyword arguments (``num_samples`` must be 1)."""
    if kwargs.get("num_samples", 1) != 1:
        raise GPT2Error("stream() generates one sample; use stream_samples() for several")
    return (pieces[0] for pieces in stream_samples(model, prompt, **kwargs))


def generate(model: torch.nn.Module, prompt: str, **kwargs) -> list[str]:
    """The continuations (without the prompt) of ``num_samples`` samples; keyword arguments as
    :func:`stream_samples`."""
    results = [""] * kwargs.get("num_samples", 1)
    for pieces in stream_samples(model, prompt, **kwargs):
        results = [text + piece for text, piece in zip(results, pieces, strict=True)]
    return results
