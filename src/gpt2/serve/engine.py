"""The engine behind ``gpt2 serve``: concurrent requests decoded together, on one thread that owns the model.

The decoding itself (joining, stepping, sampling, sliding, stop strings, leaving) is :mod:`gpt2.generate.decode`'s,
the same loop ``gpt2 sample`` runs; this module adds the thread, the queue and admission. Each turn the thread

1. admits waiting requests (*continuous batching*: a request joins at the next decode step, not the next
   batch), as long as the batch has rows free; the first request that does not fit waits at the head;
2. runs one :meth:`~gpt2.generate.decode.Batch.step` over every joined request.

A request's events (:class:`~gpt2.generate.decode.Step`, then one :class:`~gpt2.generate.decode.Finished`) go to
its ``sink`` from the engine thread.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterator, Sequence
from queue import Empty, Queue

import torch

from gpt2.errors import GPT2Error
from gpt2.generate.decode import Batch, Finished, Request, Step, fit_prompt
from gpt2.generate.sampling import SamplingOptions

__all__ = ["MAX_BATCH_ROWS", "Engine", "Finished", "Request", "Step"]

MAX_BATCH_ROWS = 32  # rows decoded together; more requests wait for a row to free up (bounds memory)
_CLOSE = object()  # the sentinel that stops the engine thread


class Engine:
    """Owns ``model`` and decodes every submitted request in one shared batch, on a daemon thread."""

    def __init__(self, model: torch.nn.Module, max_batch_rows: int = MAX_BATCH_ROWS):
        self.batch = Batch(model)
        self.model = self.batch.model
        self.max_batch_rows = max_batch_rows
        self._waiting: Queue = Queue()
        self._held: Request | None = None  # taken from the queue but waiting for free rows: first in line
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closing = False

    @property
    def steps(self) -> int:
        """Decode steps run (for tests and the benchmark: shows that requests shared steps)."""
        return self.batch.steps

    def submit(
        self,
        prompt_ids: Sequence[int],
        options: SamplingOptions,
        sink: Callable[[Step | Finished], None],
        *,
        logprobs: int | None = None,
        prompt_logprobs: bool = False,
        on_notice: Callable[[str], None] | None = None,
    ) -> Request:
        """Queue a request; it joins the batch at the next decode step (or when rows free up)."""
        if options.num_samples > self.max_batch_rows:
            raise GPT2Error(f"at most {self.max_batch_rows} samples per request, got {options.num_samples}")
        ids = fit_prompt(prompt_ids, self.model.config.block_size, options.max_new_tokens, on_notice)
        request = Request(ids, options, sink, logprobs=logprobs, prompt_logprobs=prompt_logprobs)
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
                while not isinstance(event := events.get(), Finished):
                    yield event
                if event.reason == "error":
                    raise GPT2Error(event.message)
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
                self._admit(block=not self.batch.requests)
                self.batch.step()
            except Exception as exc:  # a failure no single request caused: never leave clients waiting
                self.batch.clear(Finished("error", f"generation failed: {type(exc).__name__}: {exc}"))

    def _admit(self, block: bool) -> None:
        while True:
            request, self._held = self._held, None
            if request is None:
                try:
                    request = self._waiting.get(block=block)
                except Empty:
                    return
            block = False
            if request is _CLOSE or self._closing:
                self.batch.clear(Finished("stop"))
                return
            if request.cancelled.is_set():
                request.sink(Finished("stop"))
                continue
            if self.batch.rows + request.options.num_samples > self.max_batch_rows:
                self._held = request  # no room yet: first in line when rows free up
                return
            self.batch.join(request)
