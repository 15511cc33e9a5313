"""The batched decoding engine behind ``gpt2 serve``: concurrent requests decoded together with one KV cache.

One background thread owns the model. Each step it

1. admits waiting requests (*continuous batching*: a request joins at the next decode step, not the next
   batch): its prompt is prefilled alone (batch 1, exactly as :func:`gpt2.generate.generate_token_ids`
   does) and its keys/values are appended as new rows of the shared cache;
2. picks the next token of every request from its rows' logits, with the request's own sampling options
   and its own ``torch.Generator`` (so a seeded request draws the same numbers whatever else is in the batch);
3. drops the rows of finished or cancelled requests (the others carry on at the next step, never stalled);
4. runs one forward pass over all remaining rows: one new token per row, each at its own position.

**Per-row positions, not left padding.** Rows hold prompts and outputs of different lengths. With left
padding every row would need re-padding (a copy of its whole cache) whenever a longer request joins, and
position ids would have to be shifted by each row's pad count. With per-row lengths
(:attr:`gpt2.model.KVCache.lengths`) a row keeps the positions it had when decoded alone, a new row is a
plain concatenation, and the attention mask is simply "key index <= my length" — which is also why the
greedy tokens of a request are the same alone or in a mixed batch.

A request of ``n`` samples is ``n`` rows that stay together until all of them end (as in ``gpt2 sample -n``),
so its draws match ``gpt2 sample --seed`` for the same options. A row that reaches the context window
slides like :mod:`gpt2.generate`: its cache is rebuilt from the last 3/4 of the window.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from queue import Empty, Queue

import torch

from gpt2.config import GPT2_VOCAB_SIZE
from gpt2.errors import GPT2Error
from gpt2.generate import SLIDE_KEEP_FRACTION, fit_prompt
from gpt2.generate.sampling import SamplingOptions, pick_next_tokens
from gpt2.model import GPT, KVCache
from gpt2.runtime.device import model_device
from gpt2.runtime.parallel import unwrap_model
from gpt2.tokenizer import get_tokenizer

MAX_BATCH_ROWS = 32  # rows decoded together; more requests wait for a row to free up (bounds memory)


@dataclass
class Step:
    """What one request got from one decode step: a token id per sample, its log-probability under the
    model (log-softmax of the raw logits) and, if asked for, the ``top_logprobs`` most likely alternatives."""

    token_ids: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]] | None = None
    prompt: bool = False  # the prompt's tokens 1.. and their log-probabilities (sent first, if asked for)


@dataclass
class Finished:
    """The end of a request: ``reason`` is "stop" (all samples ended with <|endoftext|> or were cancelled),
    "length" (max_new_tokens reached) or "error" (``message`` says why)."""

    reason: str
    message: str = ""


@dataclass
class Request:
    """One generation in the engine. ``prompt_ids`` are the tokens actually fed (already fitted to the window);
    events (:class:`Step`, then one :class:`Finished`) go to ``sink`` from the engine thread."""

    prompt_ids: list[int]
    options: SamplingOptions
    sink: Callable[[Step | Finished], None]
    top_logprobs: int = 0
    prompt_logprobs: bool = False  # also report each prompt token's log-probability first (OpenAI's echo+logprobs)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # engine-side state
    generator: torch.Generator | None = None
    tokens: torch.Tensor | None = None  # (n, P + max_new_tokens) prompt + generated
    filled: int = 0  # tokens filled in `tokens`
    start: int = 0  # first token of the context window (moves when the request slides)
    steps: int = 0
    need: int = 0  # cache positions the request can fill: min(window, prompt + max_new_tokens)
    finished_rows: torch.Tensor | None = None

    def cancel(self) -> None:
        """Stop generating (a client that disconnected, a stop string reached); the rows leave at the next step."""
        self.cancelled.set()


class Engine:
    """Owns ``model`` and decodes every submitted request in one shared batch, on a daemon thread."""

    def __init__(self, model: torch.nn.Module, max_batch_rows: int = MAX_BATCH_ROWS):
        self.model: GPT = unwrap_model(model)  # torch.compile / DDP wrappers in any order
        self.config = self.model.config
        self.device = model_device(self.model)
        self.dtype = _float_dtype(self.model)
        self.max_batch_rows = max_batch_rows
        self.keep = max(1, int(self.config.block_size * SLIDE_KEEP_FRACTION))
        self.eot = get_tokenizer().eot_id
        self._waiting: Queue[Request] = Queue()
        self._held: Request | None = None  # taken from the queue but waiting for free rows: first in line
        self._active: list[Request] = []
        self._cache: KVCache | None = None  # rows of every active request, in `_active` order
        self._logits: torch.Tensor | None = None  # (rows, V) next-token logits of those rows
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closing = False
        self.steps = 0  # decode steps run (for tests and the benchmark: shows that requests shared steps)

    # -- public API ---------------------------------------------------------------------------------------

    def submit(
        self,
        prompt_ids: Sequence[int],
        options: SamplingOptions,
        sink: Callable[[Step | Finished], None],
        *,
        top_logprobs: int = 0,
        prompt_logprobs: bool = False,
        on_notice: Callable[[str], None] | None = None,
    ) -> Request:
        """Queue a request; it joins the batch at the next decode step (or when a row frees up)."""
        if options.num_samples > self.max_batch_rows:
            raise GPT2Error(f"at most {self.max_batch_rows} samples per request, got {options.num_samples}")
        ids = fit_prompt(prompt_ids, self.config.block_size, options.max_new_tokens, on_notice)
        request = Request(ids, options, sink, top_logprobs=top_logprobs, prompt_logprobs=prompt_logprobs)
        self._waiting.put(request)
        self._ensure_thread()
        return request

    def stream(self, prompt_ids: Sequence[int], options: SamplingOptions, **kwargs) -> Iterator[Step]:
        """Submit now (errors and notices come at the call) and return an iterator over the request's steps
        for the calling thread; closing the iterator early cancels the request."""
        events: Queue[Step | Finished] = Queue()
        request = self.submit(prompt_ids, options, events.put, **kwargs)

        def steps() -> Iterator[Step]:
            try:
                while True:
                    event = events.get()
                    if isinstance(event, Finished):
                        if event.reason == "error":
                            raise GPT2Error(event.message)
                        return
                    yield event
            finally:
                request.cancel()

        return steps()

    def close(self) -> None:
        """Stop the engine thread (waiting and active requests end with "stop"); called at exit too, since a
        thread still blocked in torch when the interpreter exits aborts the process."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._closing = True
            self._waiting.put(_CLOSE)
            thread.join(timeout=30)

    # -- the decode loop (engine thread) ------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._closing:
                raise GPT2Error("the engine is shut down")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="gpt2-engine", daemon=True)
                self._thread.start()
                atexit.register(self.close)

    def _loop(self) -> None:
        while not self._closing:
            try:
                self._admit(block=not self._active)
                self._step()
            except Exception as exc:  # never leave clients waiting forever: fail every active request, go on
                for request in self._active:
                    request.sink(Finished("error", _message(exc)))
                self._active, self._cache, self._logits = [], None, None

    @torch.inference_mode()
    def _admit(self, block: bool) -> None:
        rows = sum(r.options.num_samples for r in self._active)
        while True:
            request, self._held = self._held, None
            if request is None:
                try:
                    request = self._waiting.get(block=block)
                except Empty:
                    return
            block = False
            if request is _CLOSE or self._closing:
                for active in self._active:
                    active.sink(Finished("stop"))
                self._active, self._cache, self._logits = [], None, None
                return
            if request.cancelled.is_set():
                request.sink(Finished("stop"))
                continue
            if rows + request.options.num_samples > self.max_batch_rows:
                self._held = request  # no room yet: first in line when rows free up
                return
            try:
                self._join(request)
            except Exception as exc:  # this request failed (e.g. out of memory); the batch carries on
                request.sink(Finished("error", _message(exc)))
                continue
            rows += request.options.num_samples

    def _join(self, request: Request) -> None:
        """Prefill ``request``'s prompt alone and append its rows to the batch cache."""
        options, ids = request.options, request.prompt_ids
        n, P = options.num_samples, len(ids)
        if options.temperature > 0:
            request.generator = torch.Generator(device=self.device)
            if options.seed is None:
                request.generator.seed()
            else:
                request.generator.manual_seed(options.seed)
        request.tokens = torch.empty(n, P + options.max_new_tokens, dtype=torch.long, device=self.device)
        request.tokens[:, :P] = torch.tensor(ids, dtype=torch.long, device=self.device)
        request.filled, request.finished_rows = P, torch.zeros(n, dtype=torch.bool, device=self.device)
        # Cache positions this request can ever fill (a row that slides needs the whole window).
        request.need = min(self.config.block_size, P + options.max_new_tokens)
        single = KVCache.empty(self.config, 1, request.need, self.device, self.dtype)
        logits, _ = self.model(
            request.tokens[:1, :P], kv_cache=single, logits_at=None if request.prompt_logprobs else -1
        )
        if request.prompt_logprobs:
            chosen = _log_softmax(logits[0, :-1]).gather(1, request.tokens[0, 1:P, None])[:, 0]
            request.sink(Step(ids[1:], chosen.tolist(), prompt=True))
        last = logits[:, -1].expand(n, -1)
        k, v = single.k.expand(-1, n, -1, -1, -1), single.v.expand(-1, n, -1, -1, -1)
        lengths = torch.full((n,), P, dtype=torch.long, device=self.device)
        if self._cache is None:
            self._cache = KVCache(k.clone(), v.clone(), lengths=lengths)
            self._logits = last.clone()
        else:
            # The shared cache is as long as its longest-lived row needs (not the whole window): joining
            # copies it, so a short cache keeps joins cheap. Pad whichever side is shorter.
            length = max(self._cache.max_len, request.need)
            self._cache = KVCache(
                torch.cat([_pad_to(self._cache.k, length), _pad_to(k, length)], 1),
                torch.cat([_pad_to(self._cache.v, length), _pad_to(v, length)], 1),
                lengths=torch.cat([self._cache.lengths, lengths]),
            )
            self._logits = torch.cat([self._logits, last])
        self._active.append(request)

    @torch.inference_mode()
    def _step(self) -> None:
        if not self._active:
            return
        keep_rows: list[int] = []
        survivors: list[Request] = []
        row = 0
        for request in self._active:
            n = request.options.num_samples
            rows = slice(row, row + n)
            if self._pick(request, self._logits[rows]):
                survivors.append(request)
                keep_rows.extend(range(row, row + n))
            row += n
        if len(survivors) < len(self._active):  # finished requests leave; the rest are not held up
            self._active = survivors
            if not survivors:
                self._cache, self._logits = None, None
                return
            index = torch.tensor(keep_rows, device=self.device)
            length = max(r.need for r in survivors)  # the cache shrinks to what the survivors need
            self._cache = KVCache(
                self._cache.k[:, :, :, :length].index_select(1, index),
                self._cache.v[:, :, :, :length].index_select(1, index),
                lengths=self._cache.lengths.index_select(0, index),
            )
        self._slide_full_rows()
        last = torch.cat([r.tokens[:, r.filled - 1 : r.filled] for r in self._active])
        logits, _ = self.model(last, kv_cache=self._cache)
        self._logits = logits[:, -1, :]
        self.steps += 1

    def _pick(self, request: Request, logits: torch.Tensor) -> bool:
        """Choose the next tokens of ``request`` (its rows' logits (n, V)), tell its sink; False when it is done."""
        if request.cancelled.is_set():
            request.sink(Finished("stop"))
            return False
        options = request.options
        context = request.tokens[:, request.start : request.filled]
        next_ids = pick_next_tokens(logits, context, options, request.generator)
        request.tokens[:, request.filled] = next_ids
        request.filled += 1
        request.steps += 1
        logprobs = _log_softmax(logits)
        chosen = logprobs.gather(1, next_ids[:, None])[:, 0]
        top = None
        if request.top_logprobs:
            values, ids = logprobs.topk(request.top_logprobs, dim=-1)
            top = [list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(ids, values, strict=True)]
        request.sink(Step(next_ids.tolist(), chosen.tolist(), top))
        request.finished_rows |= next_ids == self.eot
        if bool(request.finished_rows.all()):
            request.sink(Finished("stop"))
            return False
        if request.steps >= options.max_new_tokens:
            request.sink(Finished("length"))
            return False
        return True

    def _slide_full_rows(self) -> None:
        """Rows whose window is full keep its last 3/4: re-prefill all but their newest token, which the
        coming decode step then feeds at its new position like any other row's."""
        row = 0
        for request in self._active:
            n = request.options.num_samples
            if request.filled - request.start > self.config.block_size:
                request.start = request.filled - self.keep
                cache = KVCache.empty(self.config, n, request.need, self.device, self.dtype)
                self.model(request.tokens[:, request.start : request.filled - 1], kv_cache=cache, logits_at=-1)
                self._cache.k[:, row : row + n, :, : request.need] = cache.k
                self._cache.v[:, row : row + n, :, : request.need] = cache.v
                self._cache.lengths[row : row + n] = self.keep - 1
            row += n


_CLOSE = Request([], SamplingOptions(), lambda event: None)  # the sentinel that stops the engine thread


def _pad_to(cache: torch.Tensor, length: int) -> torch.Tensor:
    """``cache`` (L, B, H, T, D) with zeros appended along T up to ``length`` positions."""
    extra = length - cache.shape[3]
    return cache if extra == 0 else torch.nn.functional.pad(cache, (0, 0, 0, extra))


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, GPT2Error) else f"generation failed: {type(exc).__name__}: {exc}"


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits[..., :GPT2_VOCAB_SIZE].float(), dim=-1)  # padded vocab rows are not tokens


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    """The activation dtype: that of the first floating-point parameter (an int8 model keeps fp32 embeddings)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
