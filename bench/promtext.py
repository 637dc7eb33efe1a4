"""Reading the few Prometheus series the benchmark needs from a /metrics text page."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

# Write verbs as kube-apiserver labels them (server-side apply is APPLY).
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
COUNTED_RESOURCES = ("milvusrolebindings", "events")
# Reads a reconcile may make besides what the watch delivers.
READ_VERBS = frozenset({"GET", "LIST"})
READ_RESOURCES = ("milvusrolebindings", "milvusconnections", "clustermilvusconnections", "secrets")

Labels = dict[str, str]


def samples(text: str, names: Collection[str]) -> list[tuple[str, Labels, float]]:
    """(sample name, labels, value) of the samples called `names`.

    The apiserver's page is megabytes; only the lines of the wanted series are parsed.
    """
    wanted = frozenset(names)
    lines = [line for line in text.splitlines() if _series_name(line) in wanted]
    found: list[tuple[str, Labels, float]] = []
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name in wanted:
                found.append((sample.name, dict(sample.labels), float(sample.value)))
    return found


def _series_name(line: str) -> str:
    ends = [i for i in (line.find("{"), line.find(" ")) if i >= 0]
    return line[: min(ends)] if ends else line


def write_key(resource: str, subresource: str, verb: str) -> str:
    """How a write is named in results: `milvusrolebindings/status PATCH`."""
    return f"{resource}/{subresource} {verb}" if subresource else f"{resource} {verb}"


def apiserver_requests(
    text: str, verbs: Collection[str], resources: Collection[str]
) -> dict[str, float]:
    """apiserver_request_total of `verbs` on `resources`, summed over codes."""
    totals: dict[str, float] = defaultdict(float)
    for _, labels, value in samples(text, ["apiserver_request_total"]):
        resource = labels.get("resource", "")
        verb = labels.get("verb", "")
        if resource in resources and verb in verbs:
            totals[write_key(resource, labels.get("subresource", ""), verb)] += value
    return dict(totals)


def apiserver_writes(text: str) -> dict[str, float]:
    """Write requests on MilvusRoleBindings (any subresource) and Events, any response code."""
    return apiserver_requests(text, WRITE_VERBS, COUNTED_RESOURCES)


def apiserver_reads(text: str) -> dict[str, float]:
    """GET and LIST requests on bindings, connections and Secrets (not watches)."""
    return apiserver_requests(text, READ_VERBS, READ_RESOURCES)


def subtract(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    keys = set(after) | set(before)
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(keys)}


def total_for(counts: Mapping[str, float], resource: str) -> float:
    return sum(v for k, v in counts.items() if k.split(" ")[0].split("/")[0] == resource)


@dataclass
class OperatorMetrics:
    """The operator's own series (mrbo_*), as far as the running operator exports them."""

    calls: dict[str, float] = field(default_factory=dict)  # operation -> calls, any outcome
    failed_calls: dict[str, float] = field(default_factory=dict)  # operation -> non-success
    call_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)  # op -> (sum, n)
    reconciles: dict[str, float] = field(default_factory=dict)  # result -> count
    bindings: dict[str, float] = field(default_factory=dict)  # ready -> gauge
    drift_corrections: float | None = None

    def call_count(self, operation: str) -> float:
        return self.calls.get(operation, 0.0)


def operator_metrics(text: str) -> OperatorMetrics:
    found = OperatorMetrics()
    names = [
        "mrbo_milvus_calls_total",
        "mrbo_milvus_call_duration_seconds_sum",
        "mrbo_milvus_call_duration_seconds_count",
        "mrbo_reconciles_total",
        "mrbo_bindings",
        "mrbo_drift_corrections_total",
    ]
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for name, labels, value in samples(text, names):
        operation = labels.get("operation", "")
        if name == "mrbo_milvus_calls_total":
            found.calls[operation] = found.calls.get(operation, 0.0) + value
            if labels.get("outcome", "success") != "success":
                found.failed_calls[operation] = found.failed_calls.get(operation, 0.0) + value
        elif name == "mrbo_milvus_call_duration_seconds_sum":
            sums[operation] += value
        elif name == "mrbo_milvus_call_duration_seconds_count":
            counts[operation] += value
        elif name == "mrbo_reconciles_total":
            result = labels.get("result", "")
            found.reconciles[result] = found.reconciles.get(result, 0.0) + value
        elif name == "mrbo_bindings":
            found.bindings[labels.get("ready", "")] = value
        elif name == "mrbo_drift_corrections_total":
            found.drift_corrections = (found.drift_corrections or 0.0) + value
    found.call_seconds = {op: (sums[op], counts[op]) for op in counts}
    return found


def operator_delta(after: OperatorMetrics, before: OperatorMetrics) -> OperatorMetrics:
    """Counters moved between two scrapes (gauges are taken from `after`)."""
    drift = None
    if after.drift_corrections is not None:
        drift = after.drift_corrections - (before.drift_corrections or 0.0)
    return OperatorMetrics(
        calls=subtract(after.calls, before.calls),
        failed_calls=subtract(after.failed_calls, before.failed_calls),
        call_seconds={
            op: (
                s - before.call_seconds.get(op, (0.0, 0.0))[0],
                n - before.call_seconds.get(op, (0.0, 0.0))[1],
            )
            for op, (s, n) in after.call_seconds.items()
        },
        reconciles=subtract(after.reconciles, before.reconciles),
        bindings=dict(after.bindings),
        drift_corrections=drift,
    )
