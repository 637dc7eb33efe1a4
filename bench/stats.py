"""Percentiles and summaries of latency samples (seconds in, seconds out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between the closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p99: float
    mean: float
    min: float
    max: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    return Summary(
        count=len(values),
        p50=percentile(values, 50),
        p99=percentile(values, 99),
        mean=sum(values) / len(values),
        min=min(values),
        max=max(values),
    )
