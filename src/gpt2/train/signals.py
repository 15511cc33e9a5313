"""Graceful stop: SIGTERM / SIGINT ask the loop to stop at the next micro-step boundary, save a checkpoint, exit 0."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from typing import Any


class StopRequest:
    """SIGTERM / SIGINT set ``requested``; the loop checks it after each step and between micro-steps.

    A second Ctrl-C stops at once (KeyboardInterrupt) for when the user really means it. The previous
    handlers are put back on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{signal.Signals(signum).name} received: finishing this step, saving a checkpoint, then exiting",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopRequest:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers, no graceful stop
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


SLOW_STEP_SECONDS = 3600.0  # warn when one optimizer step would take longer than this
DISTRIBUTED_CHECK_SECONDS = 10.0  # under torchrun, ranks agree on a stop between micro-steps only for steps this slow


class MicroStepStop:
    """A stop request honoured between the micro-steps of one optimizer step, and a warning for absurd steps.

    A step of ``--batch-tokens 1e10`` can run for hours; SIGTERM (a preemption) must not wait for it. So
    :meth:`abort` is asked before every micro-step after the first: when it says yes the trainer drops
    the half-accumulated step and rewinds the data position and RNGs to the step's start, so the
    checkpoint it then saves (of the last complete step) resumes exactly. One process checks its own
    flag (free); under torchrun the ranks must agree (a collective per micro-step), so they do that only
    once the first step showed steps are slow (> :data:`DISTRIBUTED_CHECK_SECONDS`).
    After the second micro-step of the run, :meth:`time_micro_step` warns if a whole step would take
    more than :data:`SLOW_STEP_SECONDS` at the measured rate.
    """

    def __init__(self, stop: StopRequest, ctx: Any, grad_accum: int, warn: Any):
        self.stop, self.ctx, self.grad_accum, self.warn = stop, ctx, grad_accum, warn
        self.check = not ctx.distributed  # under torchrun: decided after the first step (see step_done)
        self.timed = False
        self._start: tuple[Any, Any] | None = None  # (loader state, RNG states) at the start of the step
        self._decided = not ctx.distributed

    def begin_step(self, loader: Any, device: Any) -> None:
        """Remember where the step starts (data position, RNG states) so :meth:`abort` can rewind to it."""
        from gpt2.store.checkpointer import capture_rng_state

        self._loader, self._device = loader, device
        self._start = (loader.state_dict(), capture_rng_state(device)) if self.grad_accum > 1 else None

    def time_micro_step(self, started: float, device: Any) -> None:
        """Warn (once) if ``grad_accum`` micro-steps as long as this one (begun at ``started``) make an absurd step."""
        if self.timed:
            return
        self.timed = True
        if device.type == "cuda":  # the kernels of this micro-step, not just their launch
            import torch

            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        estimate = seconds * self.grad_accum
        if estimate > SLOW_STEP_SECONDS:
            self.warn(
                f"one optimizer step will take ~{estimate / 3600:.1f} h at the measured rate "
                f"({self.grad_accum:,} micro-steps of {seconds:.1f} s); lower --batch-tokens or raise --micro-batch"
            )

    def step_done(self, seconds: float) -> None:
        """After the first step, under torchrun: check between micro-steps only if steps are slow (all ranks agree)."""
        if not self._decided:
            from gpt2.runtime.distributed import any_rank

            self.check, self._decided = any_rank(seconds > DISTRIBUTED_CHECK_SECONDS, self.ctx), True

    def abort(self) -> bool:
        """True when the step in progress is to be dropped for a stop request (ask between micro-steps); then the
        data position and RNGs are already back at the step's start (the caller drops the gradients)."""
        if not self.check:
            return False
        if self.ctx.distributed:
            from gpt2.runtime.distributed import any_rank

            requested = any_rank(self.stop.requested, self.ctx)
        else:
            requested = self.stop.requested
        if requested and self._start is not None:
            from gpt2.store.checkpointer import restore_rng_state

            self._loader.load_state_dict(self._start[0])
            restore_rng_state(self._start[1], self._device)
        return requested
