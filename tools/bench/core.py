"""What every benchmark suite shares: the result record and a median-of-repeats timer.

A suite is a module ``tools.bench.<suite>`` with
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


def interleaved_median_seconds(fns: dict[str, Callable[[], Any]], repeat: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median wall time in seconds of each of ``fns``, timed in turn within every repeat.

    Alternating ours / reference inside each round (instead of all of one, then all of the other)
    spreads the noise of a shared machine (another job starting, CPU frequency changes) over both
    sides, so their ratio is steadier than either absolute figure. The order rotates from round to
    round (a, b, c; b, c, a; ...): no side is always the first one after a pause, or always the one
    timed right after a given other (caches, allocator state and clock boosts favour neither).
    """
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(max(1, repeat)):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
