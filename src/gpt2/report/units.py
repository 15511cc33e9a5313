"""Human-readable counts and durations for reports and plot axes."""

from __future__ import annotations


def human_count(n: float) -> str:
    """1234567 -> '1.23M' (tokens, parameters)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def human_duration(seconds: float) -> str:
    """3725.0 -> '1h 02m 05s'."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h {m:02d}m {s:02d}s"
    return f"{m}m {s:02d}s" if m else f"{s}s"
