"""What every benchmark suite shares: the result record and a median-of-repeats timer.

A suite is a module ``gpt2.bench.<suite>`` with
``run(device: str = "cpu", repeat: int = 3, quick: bool = False) -> list[BenchResult]``;
``quick`` shrinks sizes so the suite finishes in seconds (used by the test suite).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BenchResult:
    """One measured comparison. ``ratio`` = ours / reference, oriented so higher is better for us
    (for a lower-is-better unit such as seconds or bytes, the suite passes reference / ours)."""

    name: str
    ours: float
    reference: float
    unit: str
    ratio: float
    reference_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


def median_seconds(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` untimed runs.

    ``fn`` must do its own device synchronisation (e.g. ``torch.cuda.synchronize()``) before returning.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
