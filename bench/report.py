"""From the results (the JSON written) to figures with floor, ratio, target and verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

# Ratio targets of bulk apply -> all Ready against the floor, by size (the targets).
BULK_TARGETS = {1000: 3.0, 10000: 5.0}
SINGLE_TARGET = 2.0
RSS_LIMIT_MB = 300.0
RSS_TARGET_SIZE = 10000


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | bool | None  # None: not measured (n/a)
    unit: str  # "ms", "s", "/s", "MB", "%", "" (a count), "exact"
    floor: float | None = None
    limit: float | None = None  # bound on the ratio (on_ratio) or the value; None: no target
    on_ratio: bool = False
    strict: bool = False  # value < limit rather than <=
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if isinstance(self.value, bool) or self.value is None or not self.floor:
            return None
        return self.value / self.floor

    @property
    def target(self) -> str:
        if self.unit == "exact":
            return "exact"
        if self.limit is None:
            return "-"
        if self.on_ratio:
            return f"<= {self.limit:g}x floor"
        return (
            f"{'<' if self.strict else '<='} {self.limit:g}{' ' + self.unit if self.unit else ''}"
        )

    @property
    def verdict(self) -> str:
        if self.unit == "exact":
            return "n/a" if self.value is None else ("PASS" if self.value else "MISS")
        if self.limit is None:
            return "-"
        measured = self.ratio if self.on_ratio else self.value
        if measured is None or isinstance(measured, bool):
            return "n/a"
        ok = measured < self.limit if self.strict else measured <= self.limit
        return "PASS" if ok else "MISS"

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio, "target": self.target, "verdict": self.verdict}


def _get(data: Any, *path: str | int) -> Any:
    """data[path[0]][path[1]]..., None where a step is missing (JSON keys are strings)."""
    for step in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(str(step))
    return data


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else float(seconds) * 1000


def _exact(check: Any) -> bool | None:
    return None if not isinstance(check, Mapping) else bool(check.get("exact"))


def _check_note(check: Any) -> str:
    if not isinstance(check, Mapping):
        return ""
    examples = [f"-{u}:{r}" for u, r in check.get("missing_examples") or []][:3]
    examples += [f"+{u}:{r}" for u, r in check.get("extra_examples") or []][:3]
    return (
        f"{check.get('actual')}/{check.get('expected')} grants, "
        f"{check.get('missing')} missing, {check.get('extra')} extra"
        + (f" ({' '.join(examples)})" if examples else "")
    )


def floor_figures(results: Mapping[str, Any]) -> list[Figure]:
    floor = results.get("floor") or {}
    figures = []
    for label, key in (
        ("create (AddUserToRole + status PATCH)", "create"),
        ("delete (RemoveUserFromRole + PATCH)", "delete"),
    ):
        for q in ("p50", "p99"):
            figures.append(Figure(f"floor: {label} {q}", _ms(_get(floor, key, "unit", q)), "ms"))
    figures.append(
        Figure("floor: AddUserToRole RPC alone p50", _ms(_get(floor, "create", "rpc", "p50")), "ms")
    )
    figures.append(
        Figure("floor: status PATCH alone p50", _ms(_get(floor, "create", "write", "p50")), "ms")
    )
    for size, seconds in (floor.get("bulk_create_seconds") or {}).items():
        concurrency = _get(floor, "bulk_create_concurrency", size)
        figures.append(
            Figure(
                f"floor: {size} create units",
                float(seconds),
                "s",
                note=f"{int(size) / float(seconds):.0f}/s, {concurrency} in flight (fastest tried)",
            )
        )
    return figures


def single_figures(results: Mapping[str, Any]) -> list[Figure]:
    single = results.get("single") or {}
    floor = results.get("floor") or {}
    create_p50 = _ms(_get(floor, "create", "unit", "p50"))
    delete_p50 = _ms(_get(floor, "delete", "unit", "p50"))
    change_floor = None
    rpc = _ms(_get(floor, "delete", "rpc", "p50"))
    if create_p50 is not None and rpc is not None:
        change_floor = create_p50 + rpc
    count = single.get("count", 0)
    timeouts = _get(single, "create", "timeouts")
    return [
        Figure(
            "single: apply -> Ready p50",
            _ms(_get(single, "create", "latency", "p50")),
            "ms",
            create_p50,
            SINGLE_TARGET,
            on_ratio=True,
            note=f"{count} bindings, one at a time"
            + (f", {timeouts} timed out" if timeouts else ""),
        ),
        Figure(
            "single: apply -> Ready p99",
            _ms(_get(single, "create", "latency", "p99")),
            "ms",
            _ms(_get(floor, "create", "unit", "p99")),
        ),
        Figure(
            "single: create request (POST) p50",
            _ms(_get(single, "create", "post", "p50")),
            "ms",
            note="part of apply -> Ready",
        ),
        Figure(
            "single: spec change -> Ready p50",
            _ms(_get(single, "change", "latency", "p50")),
            "ms",
            change_floor,
            note="floor: create + RemoveUserFromRole",
        ),
        Figure(
            "single: delete -> gone p50",
            _ms(_get(single, "delete", "latency", "p50")),
            "ms",
            delete_p50,
            SINGLE_TARGET,
            on_ratio=True,
        ),
        Figure(
            "single: delete -> gone p99",
            _ms(_get(single, "delete", "latency", "p99")),
            "ms",
            _ms(_get(floor, "delete", "unit", "p99")),
        ),
        Figure(
            "single: Milvus state after creates",
            _exact(single.get("milvus_after_create")),
            "exact",
            note=_check_note(single.get("milvus_after_create")),
        ),
        Figure(
            "single: Milvus state after changes",
            _exact(single.get("milvus_after_change")),
            "exact",
            note=_check_note(single.get("milvus_after_change")),
        ),
        Figure(
            "single: Milvus state after deletes",
            _exact(single.get("milvus_after_delete")),
            "exact",
            note=_check_note(single.get("milvus_after_delete")),
        ),
    ]


def bulk_figures(results: Mapping[str, Any]) -> list[Figure]:
    figures = []
    floor = results.get("floor") or {}
    for size_key, bulk in (results.get("bulk") or {}).items():
        size = int(size_key)
        floor_create = _get(floor, "bulk_create_seconds", size_key)
        floor_delete = _get(floor, "bulk_delete_seconds", size_key)
        seconds = _get(bulk, "create", "seconds")
        ready = _get(bulk, "create", "ready")
        note = f"{size / seconds:.0f}/s" if seconds else f"{ready}/{size} Ready"
        figures.append(
            Figure(
                f"bulk {size}: apply -> all Ready",
                seconds,
                "s",
                floor_create,
                BULK_TARGETS.get(size),
                on_ratio=True,
                note=note,
            )
        )
        figures.append(
            Figure(
                f"bulk {size}: Milvus state when all Ready",
                _exact(bulk.get("milvus_ready")),
                "exact",
                note=_check_note(bulk.get("milvus_ready")),
            )
        )
        seconds = _get(bulk, "delete", "seconds")
        gone = _get(bulk, "delete", "gone")
        figures.append(
            Figure(
                f"bulk {size}: delete -> all gone",
                seconds,
                "s",
                floor_delete,
                note=f"{size / seconds:.0f}/s" if seconds else f"{gone}/{size} gone",
            )
        )
        figures.append(
            Figure(
                f"bulk {size}: Milvus state when all gone",
                _exact(bulk.get("milvus_gone")),
                "exact",
                note=_check_note(bulk.get("milvus_gone")),
            )
        )
        drift = bulk.get("drift") or {}
        if drift.get("revoked"):
            figures.append(
                Figure(
                    f"bulk {size}: drift, {drift['revoked']} revoked -> re-added",
                    drift.get("seconds"),
                    "s",
                    note=f"{drift.get('corrected')}/{drift['revoked']} DriftCorrected, "
                    f"interval {_get(bulk, 'steady', 'drift_interval')} s",
                )
            )
            figures.append(
                Figure(
                    f"bulk {size}: Milvus state after drift repair",
                    _exact(bulk.get("milvus_after_drift")),
                    "exact",
                    note=_check_note(bulk.get("milvus_after_drift")),
                )
            )
        if "milvus_after_restart" in bulk:
            figures.append(
                Figure(
                    f"bulk {size}: Milvus state after a restart",
                    _exact(bulk.get("milvus_after_restart")),
                    "exact",
                    note=_check_note(bulk.get("milvus_after_restart")),
                )
            )
    return figures


def _cost_figures(
    label: str, cost: Any, rpc_limit: float, write_limit: float | None, rpc_floor: float
) -> list[Figure]:
    writes = _get(cost, "writes_per_binding", "milvusrolebindings")
    events = _get(cost, "writes_per_binding", "events")
    rpcs = _get(cost, "milvus_rpcs_per_binding")
    n = _get(cost, "bindings")
    breakdown = ", ".join(
        f"{k} {v / max(n or 1, 1):.2f}"
        for k, v in sorted((_get(cost, "operator_writes") or {}).items())
        if k.startswith("milvusrolebindings")
    )
    reads = _get(cost, "reads_per_binding")
    read_note = ", ".join(
        f"{k} {v / max(n or 1, 1):.2f}"
        for k, v in sorted((_get(cost, "operator_reads") or {}).items())
    )
    return [
        Figure(f"API writes per {label}", writes, "", 1.0, write_limit, note=breakdown),
        Figure(f"API reads per {label}", reads, "", note=read_note),
        Figure(f"Event writes per {label}", events, ""),
        Figure(
            f"Milvus RPCs per {label}",
            rpcs,
            "",
            rpc_floor,
            rpc_limit,
            note=", ".join(
                f"{k} {v:.2f}"
                for k, v in sorted((_get(cost, "milvus_calls_per_binding") or {}).items())
            ),
        ),
    ]


def cost_figures(results: Mapping[str, Any]) -> list[Figure]:
    single = results.get("single") or {}
    figures = []
    figures += _cost_figures("create (single)", _get(single, "create", "cost"), 1.0, 2.0, 1.0)
    figures += _cost_figures("spec change", _get(single, "change", "cost"), 2.0, None, 2.0)
    figures += _cost_figures("delete (single)", _get(single, "delete", "cost"), 1.0, None, 1.0)
    for size_key, bulk in (results.get("bulk") or {}).items():
        figures += _cost_figures(
            f"create (bulk {size_key})", _get(bulk, "create", "cost"), 1.0, 2.0, 1.0
        )
        figures += _cost_figures(
            f"delete (bulk {size_key})", _get(bulk, "delete", "cost"), 1.0, None, 1.0
        )
    return figures


def steady_figures(results: Mapping[str, Any]) -> list[Figure]:
    figures = []
    for size_key, bulk in (results.get("bulk") or {}).items():
        size = int(size_key)
        steady = bulk.get("steady") or {}
        figures.append(
            Figure(
                f"steady {size}: SelectUser per connection per drift interval",
                steady.get("listings_per_interval"),
                "",
                1.0,
                1.0,
                note=f"{steady.get('listings')} in {steady.get('intervals')} intervals of "
                f"{steady.get('drift_interval')} s",
            )
        )
        rss = steady.get("rss_bytes")
        figures.append(
            Figure(
                f"steady {size}: operator RSS",
                None if rss is None else rss / 2**20,
                "MB",
                limit=RSS_LIMIT_MB if size >= RSS_TARGET_SIZE else None,
                strict=True,
                note=f"peak {steady['peak_rss_bytes'] / 2**20:.0f} MB"
                if steady.get("peak_rss_bytes")
                else "",
            )
        )
        figures.append(
            Figure(
                f"steady {size}: operator CPU",
                steady.get("cpu_percent"),
                "%",
                note=f"{steady.get('cpu_seconds') or 0:.2f} CPU s "
                f"in {steady.get('seconds', 0):.0f} s",
            )
        )
        restart = bulk.get("restart") or {}
        figures.append(
            Figure(
                f"restart {size}: every binding confirmed again",
                restart.get("seconds"),
                "s",
                note=f"/readyz after {restart.get('ready_seconds') or 0:.1f} s; "
                f"{restart.get('confirmed') or 0:.0f} reconciles",
            )
        )
        rss = restart.get("rss_bytes")
        figures.append(
            Figure(
                f"restart {size}: fresh operator RSS",
                None if rss is None else rss / 2**20,
                "MB",
                limit=RSS_LIMIT_MB if size >= RSS_TARGET_SIZE else None,
                strict=True,
                note="after resuming every binding (no bulk create's peak behind it)",
            )
        )
        cpu = _get(bulk, "create", "cost", "cpu_ms_per_binding")
        figures.append(
            Figure(
                f"bulk {size}: operator CPU per create",
                cpu,
                "ms",
                note=f"{_get(bulk, 'create', 'cost', 'cpu_seconds') or 0:.1f} CPU s in all",
            )
        )
        cpu = _get(bulk, "delete", "cost", "cpu_ms_per_binding")
        figures.append(Figure(f"bulk {size}: operator CPU per delete", cpu, "ms"))
    return figures


def figures(results: Mapping[str, Any]) -> list[Figure]:
    return (
        floor_figures(results)
        + single_figures(results)
        + bulk_figures(results)
        + cost_figures(results)
        + steady_figures(results)
    )


def _value(figure: Figure) -> str:
    if figure.value is None:
        return "n/a"
    if isinstance(figure.value, bool):
        return "yes" if figure.value else "NO"
    digits = 1 if figure.unit in ("ms", "MB", "%") else 2
    unit = "" if figure.unit in ("", "exact") else f" {figure.unit}"
    return f"{figure.value:.{digits}f}{unit}"


def _floor(figure: Figure) -> str:
    if figure.floor is None:
        return ""
    digits = 1 if figure.unit in ("ms", "MB") else 2
    return f"{figure.floor:.{digits}f}"


def render(items: list[Figure]) -> str:
    """A plain-text table: figure, value, floor, ratio, target, verdict, note."""
    header = ("figure", "value", "floor", "ratio", "target", "result", "note")
    rows = [
        (
            f.name,
            _value(f),
            _floor(f),
            "" if f.ratio is None else f"{f.ratio:.2f}x",
            f.target,
            f.verdict,
            f.note,
        )
        for f in items
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for index, row in enumerate([header, *rows]):
        cells = [row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(6)]
        lines.append("  ".join(cells) + ("  " + row[6] if row[6] else ""))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def verdicts(items: list[Figure]) -> dict[str, int]:
    counts = {"PASS": 0, "MISS": 0, "n/a": 0}
    for item in items:
        if item.verdict in counts:
            counts[item.verdict] += 1
    return counts
