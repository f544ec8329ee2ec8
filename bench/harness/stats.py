"""Small statistics helpers: percentiles, medians, interval unions."""
from __future__ import annotations

import math
import statistics


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of [start, end] intervals, sorted."""
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
