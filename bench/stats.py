"""Summaries of a timed run: throughput and latency percentiles, all from wall-clock stamps.

Every process of the benchmark runs on this machine, so `time.time()` stamps taken in the
bench, a worker and the database client are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: p99 of 100 values is the 99th smallest, never interpolated."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class RunStats:
    """One measured run: `count` items started at `starts[i]` and finished at `ends[i]`."""

    count: int
    workers: int
    seconds: float  # first start to last end
    per_second: float
    p50_ms: float
    p99_ms: float
    # CPU milliseconds per item by process group ("workers", "node", "postgres"), when measured.
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # Throughput of every repetition when this is the median one of several.
    repetitions: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(starts: Sequence[float], ends: Sequence[float], workers: int) -> RunStats:
    if len(starts) != len(ends) or not starts:
        raise ValueError("need one end per start, and at least one")
    latencies = [(end - start) * 1000 for start, end in zip(starts, ends, strict=True)]
    seconds = max(ends) - min(starts)
    return RunStats(
        count=len(starts),
        workers=workers,
        seconds=seconds,
        per_second=len(starts) / seconds if seconds > 0 else float("inf"),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
    )


def median_run(runs: Sequence[RunStats]) -> RunStats:
    """The repetition with the median throughput, remembering all of them.

    A whole run, not a mix of per-field medians, so its throughput and latencies belong
    together. On a shared machine one repetition can be hit by someone else's burst of work.
    """
    if not runs:
        raise ValueError("no runs")
    middle = sorted(runs, key=lambda r: r.per_second)[(len(runs) - 1) // 2]
    return replace(middle, repetitions=[r.per_second for r in runs])
