"""Prometheus metrics: what the operator did to Milvus and how its bindings stand.

Served at /metrics on MRBO_HEALTH_LISTEN. The registry is the operator's own, so nothing a library
registers globally leaks into it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

MILVUS_CALLS = Counter(
    "mrbo_milvus_calls",
    "Milvus RPCs made, by operation and what the answer meant.",
    ["operation", "outcome"],
    registry=REGISTRY,
)
MILVUS_CALL_SECONDS = Histogram(
    "mrbo_milvus_call_duration_seconds",
    "Time from sending a Milvus RPC to its answer (or the client's error).",
    ["operation"],
    # Loopback answers in milliseconds; timeouts take seconds.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RECONCILES = Counter(
    "mrbo_reconciles",
    "Reconciles of MilvusRoleBindings, by what their Ready condition said afterwards.",
    ["phase", "result"],
    registry=REGISTRY,
)
DRIFT_CORRECTIONS = Counter(
    "mrbo_drift_corrections",
    "Grants found missing in Milvus by the drift check and added again.",
    registry=REGISTRY,
)


class BindingsByReadiness(Collector):
    """mrbo_bindings{ready}: counted from the live view at scrape time, not kept twice."""

    def __init__(self) -> None:
        self._counts: Callable[[], Mapping[str, int]] = dict

    def follow(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Where the counts come from (inventory.LiveObjects.readiness_counts)."""
        self._counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "mrbo_bindings", "MilvusRoleBindings by their Ready status.", labels=["ready"]
        )
        counts = self._counts()
        for ready in ("true", "false", "unknown"):
            family.add_metric([ready], float(counts.get(ready, 0)))
        yield family


BINDINGS = BindingsByReadiness()
REGISTRY.register(BINDINGS)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
