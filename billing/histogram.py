"""Fixed-bucket latency histograms, so percentiles come from rollups rather than from scanning events.

A histogram is a list of NBUCKETS counts; bucket i counts values v with BOUNDS_MS[i-1] <= v < BOUNDS_MS[i]
(bucket 0: v < 1 ms; the last bucket: v >= 1,000 s). The bounds step by at most 25% from 10 ms up, so a
percentile read off a histogram, interpolated linearly inside its bucket, is within 25% of the exact one
and usually far closer. Histograms of any set of rollup rows add element by element, which is what makes
p50/p95/p99 available for any time range and any breakdown.

Changing BOUNDS_MS invalidates every stored histogram: never edit it in place; add a new column instead.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

# fmt: off
BOUNDS_MS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9,
    10, 12, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90,
    100, 120, 150, 200, 250, 300, 350, 400, 500, 600, 700, 800, 900,
    1000, 1200, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000, 7000, 8000, 9000,
    10000, 12000, 15000, 20000, 25000, 30000, 35000, 40000, 50000, 60000, 70000, 80000, 90000,
    100000, 120000, 150000, 200000, 250000, 300000, 350000, 400000, 500000, 600000, 700000, 800000, 900000,
    1000000,
)
# fmt: on
NBUCKETS = len(BOUNDS_MS) + 1


def bucket(ms: int) -> int:
    """The index of the bucket `ms` falls in."""
    return bisect_right(BOUNDS_MS, ms)


def empty() -> list[int]:
    return [0] * NBUCKETS


def add(into: list[int], other: Sequence[int] | None) -> list[int]:
    """Add `other` to `into` element by element (a stored histogram may be empty: no data)."""
    for i, n in enumerate(other or ()):
        into[i] += n
    return into


def total(hist: Iterable[int]) -> int:
    return sum(hist)


def percentile(hist: Sequence[int], q: float) -> int | None:
    """The q-quantile (0 < q <= 1) in ms, interpolated linearly inside its bucket; None for no data.
    A value in the open last bucket reads as its lower bound (1,000 s)."""
    count = sum(hist)
    if count == 0:
        return None
    rank = q * count  # the rank-th smallest value, 1-based and fractional
    seen = 0
    for i, n in enumerate(hist):
        if n == 0:
            continue
        if seen + n >= rank:
            low = BOUNDS_MS[i - 1] if i > 0 else 0
            if i >= len(BOUNDS_MS):
                return low
            high = BOUNDS_MS[i]
            fraction = (rank - seen) / n
            return int(low + (high - low) * fraction)
        seen += n
    return BOUNDS_MS[-1]
