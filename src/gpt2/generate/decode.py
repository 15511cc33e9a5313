"""The decoder: every generation's loop, from ``gpt2 sample`` to the server. Prefill the prompt once, then
decode one token at a time with a KV cache (build-nanogpt re-ran the whole sequence for every token).

Callers: :func:`generate` / :func:`stream` / :func:`stream_samples` (``gpt2 sample``, the trainer's samples)
and :func:`generate_token_ids` decode one request; lm-eval's ``generate_until`` uses :func:`decode_steps`;
the server's engine keeps a :class:`Batch` of many requests that join and leave between steps. A Batch has

* **rows**: a request of ``n`` samples is ``n`` neighbouring rows that join, step and leave together;
* **one KV cache** with a length per row (:class:`gpt2.model.KVCache`): a row's next token goes to its own
  position and sees only its own row, so a row computes what it would alone (greedy tokens are the same in
  any batch) and a new request is a concatenation, with no left padding to redo;
* **a torch.Generator per request**, so a seeded request draws the same numbers whatever else is decoded.

:meth:`Batch.join` prefills a prompt (once, for all its samples) and appends its rows. :meth:`Batch.step`
picks each request's next tokens (:mod:`gpt2.generate.sampling`), turns them into text
(:class:`~gpt2.generate.text.TextAssembler`: whole characters, cut before a stop string), tells the request's
``sink`` (:class:`Step`, at the end one :class:`Finished`), drops requests that ended, slides rows whose window
is full (keep its last 3/4: truncate the row, re-prefill) and runs one forward pass over the rest. What fails
because of one request (its rows' logits, its rows in the forward pass) ends that request alone.

Slots for what comes next: penalties, min_p and logit_bias are logits processors
(:func:`~gpt2.generate.sampling.logits_processors`); chat stops at its own token (``Request.stop_ids``);
speculative decoding keeps a draft model's cache over the same rows, has the target check k drafted tokens
per row in one pass (``GPT.forward`` takes T > 1 new tokens per row at different lengths) and rewinds the
rejected ones by lowering ``KVCache.lengths`` (it replaces :meth:`Batch._pick` + :meth:`Batch._forward`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.errors import GPT2Error
from gpt2.generate.sampling import SamplingOptions, check_prompt, pick_next_tokens
from gpt2.generate.text import TextAssembler
from gpt2.model import GPT, KVCache
from gpt2.runtime.device import model_device
from gpt2.runtime.parallel import unwrap_model
from gpt2.tokenizer import get_tokenizer

SLIDE_KEEP_FRACTION = 0.75  # when a row's window is full, keep this much of it as context and re-prefill


class GenerationNotice(UserWarning):
    """Something the user should know about a generation (e.g. the prompt was truncated)."""


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
        message = (
            f"prompt has {len(ids)} tokens; kept the last {limit} so that {room} new tokens fit "
            f"in the model's {block_size}-token context window"
        )
        if on_notice is None:
            warnings.warn(message, GenerationNotice, stacklevel=3)
        else:
            on_notice(message)
        ids = ids[-limit:]
    return ids


@dataclass
class Step:
    """What one request got from one decode step, per sample: the token id, the new text ("" while held back
    or after the end; the last step also flushes), whether the sample has ended (stop token or string) and,
    if asked for, the token's log-probability under the model (log-softmax of the raw logits) and the
    ``logprobs`` most likely alternatives. ``prompt``: the prompt's tokens 1.. and their log-probabilities."""

    token_ids: list[int]
    text: list[str] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)
    logprobs: list[float] | None = None
    top: list[list[tuple[int, float]]] | None = None
    prompt: bool = False


@dataclass
class Finished:
    """The end of a request: ``reason`` is "stop" (every sample ended, or the request was cancelled),
    "length" (max_new_tokens reached) or "error" (``message`` says why)."""

    reason: str
    message: str = ""


@dataclass(eq=False)
class Request:
    """One generation: ``prompt_ids`` (already fitted, :func:`fit_prompt`) and its options; events go to
    ``sink``. ``logprobs``: None, or report each token's log-probability and that many alternatives."""

    prompt_ids: list[int]
    options: SamplingOptions
    sink: Callable[[Step | Finished], None]
    logprobs: int | None = None
    prompt_logprobs: bool = False  # also report each prompt token's log-probability first (echo + logprobs)
    stop_ids: Sequence[int] | None = None  # tokens that end a sample; None: <|endoftext|>
    cancelled: threading.Event = field(default_factory=threading.Event)
    # decoding state, set by Batch.join
    generator: torch.Generator | None = None
    # (n, prompt + max_new_tokens): the prompt, then what was generated
    tokens: torch.Tensor = field(init=False, repr=False)
    filled: int = 0  # tokens filled in `tokens`
    start: int = 0  # first token of the context window (moves when the request slides)
    need: int = 0  # cache positions the request can fill: min(window, prompt + max_new_tokens)
    texts: list[TextAssembler] = field(default_factory=list)

    def cancel(self) -> None:
        """Stop generating (a client that disconnected); the rows leave at the next step."""
        self.cancelled.set()


class Batch:
    """The rows of every joined request and their KV cache; ``step`` advances them all by one token."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str | None = None, use_cache: bool = True):
        self.model: GPT = unwrap_model(model)  # torch.compile / DDP wrappers in any order
        self.config = self.model.config
        self.device = model_device(self.model, device)
        # the activation dtype: that of the first float parameter (an int8 model keeps fp32 embeddings)
        self.dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        self.use_cache = use_cache
        self.keep = max(1, int(self.config.block_size * SLIDE_KEEP_FRACTION))
        self.requests: list[Request] = []
        self.cache: KVCache | None = None  # rows of every request, in `requests` order
        self.logits: torch.Tensor | None = None  # (rows, V) next-token logits of those rows
        self.steps = 0  # forward steps run (shows that requests shared steps)

    @property
    def rows(self) -> int:
        return sum(r.options.num_samples for r in self.requests)

    def _spans(self) -> list[tuple[Request, slice]]:
        spans, row = [], 0
        for request in self.requests:
            spans.append((request, slice(row, row + request.options.num_samples)))
            row += request.options.num_samples
        return spans

    def _rows(self, rows: slice) -> KVCache:
        """The cache of some rows: views, so the model's writes (and lengths) land in the batch's cache."""
        assert self.cache is not None  # only called with use_cache, after a join
        return KVCache(self.cache.k[:, rows], self.cache.v[:, rows], self.cache.lengths[rows])

    @torch.inference_mode()
    def join(self, request: Request) -> None:
        """Prefill ``request``'s prompt (one row) and append its rows; a failure ends the request alone."""
        try:
            options, ids = request.options, request.prompt_ids
            n, P = options.num_samples, len(ids)
            if options.temperature > 0:
                request.generator = torch.Generator(device=self.device)
                if options.seed is None:
                    request.generator.seed()  # fresh entropy from the OS, not from (nor advancing) the global RNG
                else:
                    request.generator.manual_seed(options.seed)
            request.tokens = torch.empty(n, P + options.max_new_tokens, dtype=torch.long, device=self.device)
            request.tokens[:, :P] = torch.tensor(ids, dtype=torch.long, device=self.device)
            request.filled, request.need = P, min(self.config.block_size, P + options.max_new_tokens)
            request.texts = [TextAssembler(get_tokenizer(), options.stop, request.stop_ids) for _ in range(n)]
            cache = KVCache.empty(self.config, 1, request.need, self.device, self.dtype) if self.use_cache else None
            logits_at = None if request.prompt_logprobs else -1
            logits = self.model(request.tokens[:1, :P], kv_cache=cache, logits_at=logits_at)[0]
            if request.prompt_logprobs:
                chosen = _log_softmax(logits[0, :-1]).gather(1, request.tokens[0, 1:P, None])[:, 0]
                request.sink(Step(ids[1:], logprobs=chosen.tolist(), prompt=True))
            if cache is not None:  # every sample starts from the same prefill
                k, v = cache.k.expand(-1, n, -1, -1, -1), cache.v.expand(-1, n, -1, -1, -1)
                rows = KVCache(k, v, cache.lengths.expand(n))
                self.cache = _concat([c for c in (self.cache, rows) if c is not None])
            self.logits = torch.cat([t for t in (self.logits, logits[:, -1].expand(n, -1)) if t is not None])
            self.requests.append(request)
        except Exception as exc:
            request.sink(Finished("error", _message(exc)))

    @torch.inference_mode()
    def step(self) -> None:
        """Pick every request's next tokens, let the ended ones leave, slide, run the forward pass."""
        live = []
        for request, rows in self._spans():
            assert self.logits is not None  # every joined request has its rows' logits
            try:
                if self._pick(request, self.logits[rows]):
                    self._slide(request, rows)
                    live.append(request)
            except Exception as exc:
                request.sink(Finished("error", _message(exc)))
        self._keep(live)
        if self.requests:
            self._forward()
            self.steps += 1

    def clear(self, finished: Finished) -> None:
        """End every request with ``finished`` (the server closing, or an error no request can be blamed for)."""
        for request in self.requests:
            request.sink(finished)
        self.requests, self.cache, self.logits = [], None, None

    def _pick(self, request: Request, logits: torch.Tensor) -> bool:
        """Choose ``request``'s next tokens from its rows' logits (n, V), tell its sink; False when it ended."""
        if request.cancelled.is_set():
            request.sink(Finished("stop"))
            return False
        context = request.tokens[:, request.start : request.filled]
        next_ids = pick_next_tokens(logits, context, request.options, request.generator)
        request.tokens[:, request.filled] = next_ids
        request.filled += 1
        step = Step(next_ids.tolist())
        step.text = [text.feed(token) for text, token in zip(request.texts, step.token_ids, strict=True)]
        step.done = [text.done for text in request.texts]
        length = request.filled - len(request.prompt_ids) >= request.options.max_new_tokens
        if length:  # the last step also flushes the text held back
            step.text = [piece + text.finish() for piece, text in zip(step.text, request.texts, strict=True)]
        if request.logprobs is not None:
            logprobs = _log_softmax(logits)
            step.logprobs = logprobs.gather(1, next_ids[:, None])[:, 0].tolist()
            if request.logprobs:
                values, ids = logprobs.topk(request.logprobs, dim=-1)
                step.top = [list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(ids, values, strict=True)]
        request.sink(step)
        if all(step.done) or length:
            request.sink(Finished("stop" if all(step.done) else "length"))
            return False
        return True

    def _slide(self, request: Request, rows: slice) -> None:
        """A request whose window is full keeps its last 3/4: its rows are truncated to nothing and re-prefilled
        with the kept tokens but the newest, which the coming forward pass feeds like any other row's."""
        if request.filled - request.start <= self.config.block_size:
            return
        request.start = request.filled - self.keep
        if self.use_cache:
            cache = self._rows(rows)
            cache.lengths.zero_()
            self.model(request.tokens[:, request.start : request.filled - 1], kv_cache=cache, logits_at=-1)

    def _keep(self, live: list[Request]) -> None:
        """Only the rows of ``live`` stay; the cache shrinks to what they need."""
        if len(live) == len(self.requests):
            return
        index = [i for request, rows in self._spans() if request in live for i in range(rows.start, rows.stop)]
        self.requests = live
        if not live:
            self.cache = self.logits = None
        elif self.cache is not None:
            kept, length, cache = torch.tensor(index, device=self.device), max(r.need for r in live), self.cache
            k, v = cache.k[:, :, :, :length].index_select(1, kept), cache.v[:, :, :, :length].index_select(1, kept)
            self.cache = KVCache(k, v, cache.lengths.index_select(0, kept))

    def _forward(self) -> None:
        """Every row's next-token logits: one forward pass over all rows. If it fails, each request alone, so
        a request whose rows make it fail ends with its error and the others go on."""
        cache = self.cache
        lengths = None if cache is None else cache.lengths.clone()
        try:
            self.logits = self._logits(self.requests, slice(0, self.rows))
            return
        except Exception:
            if cache is not None and lengths is not None:  # the failed pass may have advanced them
                cache.lengths.copy_(lengths)
        live, parts = [], []
        for request, rows in self._spans():
            try:
                parts.append(self._logits([request], rows))
                live.append(request)
            except Exception as exc:
                request.sink(Finished("error", _message(exc)))
        self._keep(live)
        self.logits = torch.cat(parts) if parts else None

    def _logits(self, requests: list[Request], rows: slice) -> torch.Tensor:
        if not self.use_cache:
            return torch.cat([self.model(r.tokens[:, r.start : r.filled], logits_at=-1)[0][:, -1] for r in requests])
        newest = torch.cat([r.tokens[:, r.filled - 1 : r.filled] for r in requests])
        return self.model(newest, kv_cache=self._rows(rows), logits_at=-1)[0][:, -1]


def decode_steps(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    options: SamplingOptions,
    *,
    device: torch.device | str | None = None,
    stop_ids: Sequence[int] | None = None,
    use_cache: bool = True,
    on_notice: Callable[[str], None] | None = None,
) -> Iterator[Step]:
    """One request decoded alone: its steps, until it ends (an error raises :class:`GPT2Error`). ``stop_ids``
    end a sample (default ``<|endoftext|>``; ``()``: none). ``use_cache=False`` recomputes each window every
    step (build-nanogpt's way; for tests and the benchmark). The sampling generator is the request's own, so the
    global torch RNG is left untouched."""
    batch = Batch(model, device, use_cache)
    events: list[Step | Finished] = []
    ids = fit_prompt(prompt_ids, batch.config.block_size, options.max_new_tokens, on_notice)
    batch.join(Request(ids, options, events.append, stop_ids=stop_ids))
    while True:
        for event in events:
            if isinstance(event, Finished):
                if event.reason == "error":
                    raise GPT2Error(event.message)
                return
            yield event
        events.clear()
        batch.step()


def _concat(caches: list[KVCache]) -> KVCache:
    """The rows of ``caches`` one after the other (copied), each padded with empty positions to the longest."""
    length = max(c.max_len for c in caches)
    pad = lambda t: F.pad(t, (0, 0, 0, length - t.shape[3]))  # (L, B, H, T, D): zeros appended along T
    k, v = torch.cat([pad(c.k) for c in caches], 1), torch.cat([pad(c.v) for c in caches], 1)
    return KVCache(k, v, torch.cat([c.lengths for c in caches]))


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, GPT2Error) else f"generation failed: {type(exc).__name__}: {exc}"


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits[..., :GPT2_VOCAB_SIZE].float(), dim=-1)  # padded vocab rows are not tokens


def generate_token_ids(
    model: torch.nn.Module, prompt_ids: Sequence[int], options: SamplingOptions, *, stop_at_eot: bool = True, **kwargs
) -> Iterator[list[int]]:
    """Yield, step by step, the next token id of each of ``options.num_samples`` samples (a list of B ints).

    A sample that produced ``<|endoftext|>`` keeps being decoded (the batch moves in lockstep) but the loop
    ends as soon as every sample has (``stop_at_eot``) or after ``max_new_tokens`` steps. ``kwargs``:
    :func:`decode_steps`' (device, use_cache, on_notice)."""
    steps = decode_steps(model, prompt_ids, options, stop_ids=None if stop_at_eot else (), **kwargs)
    return (step.token_ids for step in steps)


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
