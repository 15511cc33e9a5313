"""Graceful stop: SIGTERM / SIGINT ask the loop to finish its step, save a checkpoint and exit 0."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any


class StopRequest:
    """SIGTERM / SIGINT set ``requested``; the loop checks it after each step.

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
