"""The benchmark's pure parts: metric parsing, /proc parsing, percentiles, verdicts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bench import procstat, promtext, report
from bench.kube import Tracker, ready_generation
from bench.stats import percentile, summarize


def _request_line(resource: str, subresource: str, verb: str, code: str, value: int) -> str:
    group = "" if resource in ("events", "secrets") else "rbac.milvus.io"
    labels = (
        f'code="{code}",component="apiserver",dry_run="",group="{group}",resource="{resource}",'
        f'scope="resource",subresource="{subresource}",verb="{verb}",version="v1"'
    )
    return f"apiserver_request_total{{{labels}}} {value}"


APISERVER_PAGE = "\n".join(
    [
        "# HELP apiserver_request_total [STABLE] Counter of apiserver requests.",
        "# TYPE apiserver_request_total counter",
        _request_line("milvusrolebindings", "", "POST", "201", 10),
        _request_line("milvusrolebindings", "status", "PATCH", "200", 7),
        _request_line("milvusrolebindings", "status", "PATCH", "409", 2),
        _request_line("milvusrolebindings", "", "WATCH", "200", 3),
        _request_line("events", "", "POST", "201", 5),
        _request_line("secrets", "", "POST", "201", 4),
        _request_line("secrets", "", "GET", "200", 6),
        _request_line("milvusconnections", "", "GET", "200", 6),
        _request_line("namespaces", "", "GET", "200", 9),
        'apiserver_request_duration_seconds_count{resource="milvusrolebindings",verb="POST"} 99',
        "",
    ]
)

OPERATOR_PAGE = """\
# TYPE mrbo_milvus_calls_total counter
mrbo_milvus_calls_total{operation="AddUserToRole",outcome="success"} 12.0
mrbo_milvus_calls_total{operation="AddUserToRole",outcome="user_not_found"} 3.0
mrbo_milvus_calls_total{operation="SelectUser",outcome="success"} 2.0
# TYPE mrbo_milvus_calls_created gauge
mrbo_milvus_calls_created{operation="AddUserToRole",outcome="success"} 1.7e9
# TYPE mrbo_milvus_call_duration_seconds histogram
mrbo_milvus_call_duration_seconds_bucket{operation="AddUserToRole",le="+Inf"} 15.0
mrbo_milvus_call_duration_seconds_count{operation="AddUserToRole"} 15.0
mrbo_milvus_call_duration_seconds_sum{operation="AddUserToRole"} 0.06
# TYPE mrbo_reconciles_total counter
mrbo_reconciles_total{result="Granted"} 12.0
# TYPE mrbo_bindings gauge
mrbo_bindings{ready="true"} 12.0
mrbo_bindings{ready="false"} 3.0
# TYPE mrbo_drift_corrections_total counter
mrbo_drift_corrections_total 1.0
"""


def test_apiserver_writes_count_write_verbs_of_bindings_and_events_over_all_codes() -> None:
    assert promtext.apiserver_writes(APISERVER_PAGE) == {
        "milvusrolebindings POST": 10,
        "milvusrolebindings/status PATCH": 9,
        "events POST": 5,
    }


def test_apiserver_reads_count_gets_of_connections_and_secrets_but_not_watches() -> None:
    assert promtext.apiserver_reads(APISERVER_PAGE) == {
        "secrets GET": 6,
        "milvusconnections GET": 6,
    }


def test_write_totals_per_resource_include_subresources() -> None:
    writes = promtext.apiserver_writes(APISERVER_PAGE)
    assert promtext.total_for(writes, "milvusrolebindings") == 19
    assert promtext.total_for(writes, "events") == 5


def test_operator_metrics_sum_outcomes_and_keep_failures_apart() -> None:
    found = promtext.operator_metrics(OPERATOR_PAGE)
    assert found.calls == {"AddUserToRole": 15, "SelectUser": 2}
    assert found.failed_calls == {"AddUserToRole": 3}
    assert found.call_seconds == {"AddUserToRole": (0.06, 15)}
    assert found.reconciles == {"Granted": 12}
    assert found.bindings == {"true": 12, "false": 3}
    assert found.drift_corrections == 1


def test_operator_delta_is_what_moved_between_scrapes() -> None:
    before = promtext.operator_metrics(OPERATOR_PAGE)
    after = promtext.operator_metrics(
        OPERATOR_PAGE.replace('outcome="success"} 12.0', 'outcome="success"} 20.0')
    )
    moved = promtext.operator_delta(after, before)
    assert moved.calls == {"AddUserToRole": 8, "SelectUser": 0}
    assert moved.drift_corrections == 0


def test_a_page_without_operator_series_yields_no_counts() -> None:
    found = promtext.operator_metrics("# nothing here\nprocess_cpu_seconds_total 3.0\n")
    assert found.calls == {}
    assert found.drift_corrections is None


def test_cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() -> None:
    stat = "4242 (python (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 25 0 0 20 0 9 0 77"
    assert procstat.parse_stat_cpu_ticks(stat) == 175


def test_status_field_is_read_in_kib() -> None:
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert procstat.parse_status_kib(status, "VmRSS") == 102400
    assert procstat.parse_status_kib(status, "VmHWM") == 204800


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    summary = summarize([2.0, 1.0, 3.0])
    assert summary is not None
    assert (summary.min, summary.p50, summary.max) == (1.0, 2.0, 3.0)
    assert summarize([]) is None


def _binding(generation: int, observed: int, status: str = "True") -> dict[str, Any]:
    condition = {"type": "Ready", "status": status, "reason": "Granted"}
    return {
        "metadata": {"generation": generation},
        "status": {"conditions": [condition | {"observedGeneration": observed}]},
    }


def test_ready_counts_only_for_the_current_generation() -> None:
    assert ready_generation(_binding(1, 1)) == (1, "Granted")
    assert ready_generation(_binding(2, 1)) is None
    assert ready_generation(_binding(2, 2, status="False")) is None


def test_tracker_wait_returns_once_every_item_was_seen() -> None:
    async def scenario() -> tuple[bool, bool]:
        tracker = Tracker()
        tracker.record("a", 1.0)
        waiting = asyncio.create_task(tracker.wait(["a", "b"], timeout=5))
        await asyncio.sleep(0.01)
        tracker.record("b", 2.0)
        complete = await waiting
        missing = await tracker.wait(["c"], timeout=0.05)
        return complete, missing

    assert asyncio.run(scenario()) == (True, False)


def _results(single_p50_ms: float, with_metrics: bool = True) -> dict[str, Any]:
    unit = {"p50": 0.010, "p99": 0.020}
    cost: dict[str, Any] = {
        "bindings": 10,
        "operator_writes": {"milvusrolebindings PATCH": 10, "milvusrolebindings/status PATCH": 10},
        "writes_per_binding": {"milvusrolebindings": 2.0, "events": 1.0},
        "milvus_rpcs_per_binding": 1.0 if with_metrics else None,
    }
    return {
        "floor": {"create": {"unit": unit}, "delete": {"unit": unit}, "bulk_create_seconds": {}},
        "single": {
            "count": 10,
            "create": {"latency": {"p50": single_p50_ms / 1000, "p99": 0.05}, "cost": cost},
            "milvus_after_create": {"exact": False, "expected": 10, "actual": 9, "missing": 1},
        },
        "bulk": {
            "10000": {
                "create": {"seconds": 50.0, "ready": 10000},
                "steady": {"rss_bytes": 301 * 2**20, "listings_per_interval": 1.0},
            }
        },
    }


def _figure(results: dict[str, Any], name: str) -> report.Figure:
    return next(f for f in report.figures(results) if f.name == name)


def test_single_binding_passes_within_twice_the_floor_and_misses_beyond() -> None:
    assert _figure(_results(19.0), "single: apply -> Ready p50").verdict == "PASS"
    missed = _figure(_results(21.0), "single: apply -> Ready p50")
    assert missed.verdict == "MISS"
    assert missed.ratio == pytest.approx(2.1)


def test_unexported_operator_metrics_show_as_not_available() -> None:
    figure = _figure(_results(10.0, with_metrics=False), "Milvus RPCs per create (single)")
    assert figure.verdict == "n/a"
    assert "n/a" in report.render([figure])


def test_a_missing_grant_makes_the_milvus_state_check_miss() -> None:
    figure = _figure(_results(10.0), "single: Milvus state after creates")
    assert figure.verdict == "MISS"
    assert "1 missing" in figure.note


def test_rss_target_applies_at_ten_thousand_bindings() -> None:
    assert _figure(_results(10.0), "steady 10000: operator RSS").verdict == "MISS"


def test_bulk_without_a_measured_floor_has_no_ratio() -> None:
    figure = _figure(_results(10.0), "bulk 10000: apply -> all Ready")
    assert figure.ratio is None
    assert figure.verdict == "n/a"
