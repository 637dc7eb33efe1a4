"""What the operator does, measured from outside: latencies, throughput, writes, RPCs, CPU, RSS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench import milvus_state
from bench.floor import Floor, binding_object
from bench.kube import BindingWatch, Kube, KubeError
from bench.milvus_state import Pair, role_name, user_name
from bench.operator_proc import OperatorProcess
from bench.promtext import OperatorMetrics, operator_delta, subtract, total_for
from bench.stats import summarize
from milvus_rbac_operator.devenv.milvus_server import ROOT_PASSWORD, ROOT_USERNAME

NAMESPACE = "bench"
CONNECTION = "milvus"
# Between a floor unit and a single binding, each way: the operator's trailing work (its own
# watch event of the status it wrote, the Event posted 50 ms after the call) and the floor's
# (its watch events) must not fall into the other's timing.
TURN_GAP_SECONDS = 0.08
# Operations a binding's own reconcile makes; SelectUser and GetVersion are periodic.
BINDING_OPERATIONS = ("AddUserToRole", "RemoveUserFromRole")


@dataclass
class Bench:
    kube: Kube
    watch: BindingWatch
    operator: OperatorProcess
    milvus_uri: str
    roles: int
    drift_interval: float
    create_concurrency: int
    say: Callable[[str], None]

    def key(self, name: str) -> str:
        return f"{NAMESPACE}/{name}"


@dataclass
class Snapshot:
    at: float
    writes: dict[str, float]
    own: dict[str, float]
    reads: dict[str, float]
    own_reads: dict[str, float]
    operator: OperatorMetrics | None
    cpu: float | None


async def snapshot(bench: Bench) -> Snapshot:
    writes, reads = await bench.kube.apiserver_requests()
    return Snapshot(
        at=time.monotonic(),
        writes=writes,
        own=dict(bench.kube.own_writes),
        reads=reads,
        own_reads=dict(bench.kube.own_reads),
        operator=await bench.operator.metrics(),
        cpu=bench.operator.cpu_seconds(),
    )


def _operators_share(
    after: dict[str, float],
    before: dict[str, float],
    own_after: dict[str, float],
    own_before: dict[str, float],
) -> dict[str, float]:
    """Requests the API server counted between two snapshots, less the benchmark's own."""
    own = subtract(own_after, own_before)
    return {
        key: value - own.get(key, 0.0)
        for key, value in subtract(after, before).items()
        if value - own.get(key, 0.0)
    }


def cost(before: Snapshot, after: Snapshot, bindings: int) -> dict[str, Any]:
    """The operator's writes, Milvus calls and CPU between two snapshots, also per binding."""
    operator_writes = _operators_share(after.writes, before.writes, after.own, before.own)
    operator_reads = _operators_share(after.reads, before.reads, after.own_reads, before.own_reads)
    own = subtract(after.own, before.own)
    per = max(bindings, 1)
    result: dict[str, Any] = {
        "seconds": after.at - before.at,
        "bindings": bindings,
        "operator_writes": operator_writes,
        "bench_writes": {k: v for k, v in own.items() if v},
        "writes_per_binding": {
            "milvusrolebindings": total_for(operator_writes, "milvusrolebindings") / per,
            "events": total_for(operator_writes, "events") / per,
        },
        "operator_reads": operator_reads,
        "reads_per_binding": sum(operator_reads.values()) / per,
        "cpu_seconds": None,
        "cpu_ms_per_binding": None,
        "milvus_calls": None,
        "milvus_rpcs_per_binding": None,
    }
    if before.cpu is not None and after.cpu is not None:
        result["cpu_seconds"] = after.cpu - before.cpu
        result["cpu_ms_per_binding"] = (after.cpu - before.cpu) * 1000 / per
    if before.operator is not None and after.operator is not None:
        moved = operator_delta(after.operator, before.operator)
        result["milvus_calls"] = {k: v for k, v in moved.calls.items() if v}
        result["milvus_failed_calls"] = {k: v for k, v in moved.failed_calls.items() if v}
        result["milvus_rpcs_per_binding"] = (
            sum(moved.call_count(op) for op in BINDING_OPERATIONS) / per
        )
        result["milvus_calls_per_binding"] = {k: v / per for k, v in moved.calls.items() if v}
        result["milvus_call_mean_ms"] = {
            op: 1000 * s / n for op, (s, n) in moved.call_seconds.items() if n
        }
        result["reconciles"] = {k: v for k, v in moved.reconciles.items() if v}
        result["bindings_gauge"] = moved.bindings
        result["drift_corrections"] = moved.drift_corrections
    return result


async def settle(bench: Bench, quiet_seconds: float = 1.0, limit: float = 30.0) -> None:
    """Wait until the operator stops writing (Events and status land after Ready)."""
    deadline = time.monotonic() + limit
    last: tuple[Any, ...] | None = None
    while time.monotonic() < deadline:
        writes, _ = await bench.kube.apiserver_requests()
        metrics = await bench.operator.metrics()
        calls = tuple(sorted(metrics.calls.items())) if metrics else ()
        current = (tuple(sorted(writes.items())), calls)
        if current == last:
            return
        last = current
        await asyncio.sleep(quiet_seconds)


async def prepare_connection(bench: Bench) -> None:
    """The namespace, a Secret with root's credentials and MilvusConnection `milvus`; Ready."""
    kube = bench.kube
    await kube.apply_core(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    await kube.apply_core(
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": "milvus-root", "namespace": NAMESPACE},
            "stringData": {"username": ROOT_USERNAME, "password": ROOT_PASSWORD},
        },
    )
    path = f"/apis/rbac.milvus.io/v1alpha1/namespaces/{NAMESPACE}/milvusconnections"
    await kube.apply_core(
        path,
        {
            "apiVersion": "rbac.milvus.io/v1alpha1",
            "kind": "MilvusConnection",
            "metadata": {"name": CONNECTION, "namespace": NAMESPACE},
            "spec": {
                "uri": bench.milvus_uri,
                "credentialsSecretRef": {"name": "milvus-root"},
                "timeoutSeconds": 10,
            },
        },
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = await kube.get(f"{path}/{CONNECTION}", "milvusconnections")
        conditions = ((found or {}).get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return
        if not bench.operator.alive():
            break
        await asyncio.sleep(0.2)
    raise RuntimeError(f"MilvusConnection {CONNECTION} did not become Ready; see the operator log")


async def milvus_check(bench: Bench, expected: set[Pair]) -> dict[str, object]:
    actual = await asyncio.to_thread(milvus_state.bench_grants, bench.milvus_uri)
    return milvus_state.compare(expected, actual).as_json()


def _pairs(bench: Bench, count: int, shift: int = 0) -> list[Pair]:
    return [(user_name(i), role_name(i + shift, bench.roles)) for i in range(count)]


def _latencies(values: list[float]) -> dict[str, Any]:
    found = summarize(values)
    return {
        "latency": found.as_json() if found else None,
        "samples_ms": [round(v * 1000, 3) for v in values],
    }


async def _floor_turn(unit: Callable[[int], Awaitable[None]], index: int) -> None:
    """The floor's unit `index`, set apart from the operator's turns before and after."""
    await asyncio.sleep(TURN_GAP_SECONDS)
    await unit(index)
    await asyncio.sleep(TURN_GAP_SECONDS)


async def single_phase(bench: Bench, count: int, changes: int, floor: Floor) -> dict[str, Any]:
    """Bindings one at a time: apply -> Ready, spec change -> Ready, delete -> gone. Each create
    and each delete takes turns with one of the floor's units (`floor` has `count` pairs of its
    own), so that a drift in the machine's speed moves both alike."""
    names = [f"s-{i:04d}" for i in range(count)]
    pairs = _pairs(bench, count)
    alive = bench.operator.alive
    result: dict[str, Any] = {"count": count}

    before = await snapshot(bench)
    ready: list[float] = []
    posts: list[float] = []
    for index, (name, (user, role)) in enumerate(zip(names, pairs, strict=True)):
        await _floor_turn(floor.single_create, index)
        started = time.monotonic()
        await bench.kube.create_binding(binding_object(NAMESPACE, name, user, role))
        posts.append(time.monotonic() - started)
        if not await bench.watch.ready.wait([(bench.key(name), 1)], 60, alive):
            break
        ready.append(bench.watch.ready.at[(bench.key(name), 1)] - started)
    await settle(bench)
    result["create"] = _latencies(ready) | {
        "timeouts": count - len(ready),
        "post": (s.as_json() if (s := summarize(posts)) else None),
        "cost": cost(before, await snapshot(bench), len(ready)),
    }
    result["milvus_after_create"] = await milvus_check(bench, set(pairs[: len(ready)]))

    changed: list[float] = []
    before = await snapshot(bench)
    for index, name in enumerate(names[: min(changes, len(ready))]):
        new_role = role_name(index + 1, bench.roles)
        started = time.monotonic()
        await bench.kube.patch_binding(NAMESPACE, name, {"spec": {"roleName": new_role}})
        if not await bench.watch.ready.wait([(bench.key(name), 2)], 60, alive):
            break
        changed.append(bench.watch.ready.at[(bench.key(name), 2)] - started)
        pairs[index] = (pairs[index][0], new_role)
    await settle(bench)
    result["change"] = _latencies(changed) | {
        "cost": cost(before, await snapshot(bench), len(changed))
    }
    result["milvus_after_change"] = await milvus_check(bench, set(pairs[: len(ready)]))

    gone: list[float] = []
    await floor.prepare_single_deletes()
    before = await snapshot(bench)
    for index, name in enumerate(names[: len(ready)]):
        await _floor_turn(floor.single_delete, index)
        started = time.monotonic()
        await bench.kube.delete_binding(NAMESPACE, name)
        if not await bench.watch.deleted.wait([bench.key(name)], 60, alive):
            break
        gone.append(bench.watch.deleted.at[bench.key(name)] - started)
    await settle(bench)
    result["delete"] = _latencies(gone) | {
        "timeouts": len(ready) - len(gone),
        "cost": cost(before, await snapshot(bench), len(gone)),
    }
    result["milvus_after_delete"] = await milvus_check(bench, set(pairs[len(gone) : len(ready)]))
    return result


async def _all_at_once(
    concurrency: int, count: int, request: Callable[[int], Any]
) -> tuple[float, int]:
    """Seconds to send every request with `concurrency` in flight, and how many failed."""
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(index: int) -> None:
        nonlocal failures
        async with gate:
            try:
                await request(index)
            except KubeError:
                failures += 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.monotonic() - started, failures


async def bulk_phase(
    bench: Bench, size: int, steady_intervals: int, drift_sample: int
) -> dict[str, Any]:
    """`size` bindings at once: all Ready, steady state, drift repair, all deleted."""
    names = [f"b{size}-{i:05d}" for i in range(size)]
    keys = [bench.key(n) for n in names]
    pairs = _pairs(bench, size)
    alive = bench.operator.alive
    wait_limit = max(180.0, size * 0.5)
    result: dict[str, Any] = {"size": size}
    result["milvus_before"] = await milvus_check(bench, set())

    before = await snapshot(bench)
    started = time.monotonic()
    posted, failed = await _all_at_once(
        bench.create_concurrency,
        size,
        lambda i: bench.kube.create_binding(binding_object(NAMESPACE, names[i], *pairs[i])),
    )
    await bench.watch.ready.wait([(k, 1) for k in keys], wait_limit, alive)
    last = bench.watch.ready.latest([(k, 1) for k in keys])
    ready = sum(1 for k in keys if (k, 1) in bench.watch.ready.at)
    await settle(bench)
    result["create"] = {
        "seconds": (last - started) if last is not None and ready == size else None,
        "ready": ready,
        "post_seconds": posted,
        "post_failures": failed,
        "cost": cost(before, await snapshot(bench), ready),
    }
    result["milvus_ready"] = await milvus_check(bench, set(pairs))
    bench.say(
        f"  {ready}/{size} Ready in {result['create']['seconds'] or float('nan'):.2f} s "
        f"(creates sent in {posted:.2f} s)"
    )

    result["steady"] = await steady_window(bench, steady_intervals)
    result["drift"] = await drift_repair(bench, keys, pairs, drift_sample)
    result["milvus_after_drift"] = await milvus_check(bench, set(pairs))
    result["restart"] = await restart_phase(bench, size, wait_limit)
    result["milvus_after_restart"] = await milvus_check(bench, set(pairs))

    before = await snapshot(bench)
    started = time.monotonic()
    sent, failed = await _all_at_once(
        bench.create_concurrency, size, lambda i: bench.kube.delete_binding(NAMESPACE, names[i])
    )
    await bench.watch.deleted.wait(keys, wait_limit, alive)
    last = bench.watch.deleted.latest(keys)
    deleted = sum(1 for k in keys if k in bench.watch.deleted.at)
    await settle(bench)
    result["delete"] = {
        "seconds": (last - started) if last is not None and deleted == size else None,
        "gone": deleted,
        "delete_seconds": sent,
        "delete_failures": failed,
        "cost": cost(before, await snapshot(bench), deleted),
    }
    result["milvus_gone"] = await milvus_check(bench, set())
    bench.say(f"  {deleted}/{size} gone in {result['delete']['seconds'] or float('nan'):.2f} s")
    return result


async def restart_phase(bench: Bench, size: int, wait_limit: float) -> dict[str, Any]:
    """The operator restarted with `size` bindings in place: how long until every one was
    confirmed again (a resume reconciles each), and the fresh process's RSS afterwards."""
    await bench.operator.stop()
    started = time.monotonic()
    await bench.operator.start()
    ready_after = time.monotonic() - started
    confirmed, seconds = 0.0, None
    while time.monotonic() - started < wait_limit and bench.operator.alive():
        found = await bench.operator.metrics()
        confirmed = sum(found.reconciles.values()) if found is not None else 0.0
        if confirmed >= size:
            seconds = time.monotonic() - started
            break
        await asyncio.sleep(0.2)
    await settle(bench)
    rss = bench.operator.rss_bytes()
    bench.say(
        f"  restart: /readyz after {ready_after:.2f} s, {confirmed:.0f}/{size} confirmed in "
        f"{seconds if seconds is not None else float('nan'):.2f} s, RSS {(rss or 0) / 1e6:.0f} MB"
    )
    return {
        "ready_seconds": ready_after,
        "confirmed": confirmed,
        "seconds": seconds,
        "rss_bytes": rss,
        "peak_rss_bytes": bench.operator.peak_rss_bytes(),
    }


async def steady_window(bench: Bench, intervals: int) -> dict[str, Any]:
    """Idle with every binding Ready: listings per drift interval, CPU, RSS.

    The window starts right after a drift listing and lasts intervals + 1/2, so it holds
    exactly `intervals` timer ticks whatever their jitter.
    """
    interval = bench.drift_interval
    aligned = False
    first = await bench.operator.metrics()
    if first is not None:
        deadline = time.monotonic() + 2 * interval + 10
        while time.monotonic() < deadline and not aligned:
            await asyncio.sleep(0.2)
            now = await bench.operator.metrics()
            aligned = now is not None and now.call_count("SelectUser") > first.call_count(
                "SelectUser"
            )
    before = await snapshot(bench)
    await asyncio.sleep((intervals + 0.5) * interval)
    after = await snapshot(bench)
    window = cost(before, after, 1)
    listings = None
    if before.operator is not None and after.operator is not None:
        listings = after.operator.call_count("SelectUser") - before.operator.call_count(
            "SelectUser"
        )
    seconds = after.at - before.at
    cpu = window["cpu_seconds"]
    return {
        "seconds": seconds,
        "drift_interval": interval,
        "intervals": intervals,
        "aligned": aligned,
        "connections": 1,
        "listings": listings,
        "listings_per_interval": None if listings is None else listings / intervals,
        "cpu_seconds": cpu,
        "cpu_percent": None if cpu is None else 100 * cpu / seconds,
        "rss_bytes": bench.operator.rss_bytes(),
        "peak_rss_bytes": bench.operator.peak_rss_bytes(),
        "operator_writes": window["operator_writes"],
        "milvus_calls": window["milvus_calls"],
    }


async def drift_repair(
    bench: Bench, keys: list[str], pairs: list[Pair], sample: int
) -> dict[str, Any]:
    """Revoke some grants behind the operator's back; time until each is DriftCorrected."""
    count = min(sample, len(keys))
    if count == 0:
        return {"revoked": 0}
    step = max(1, len(keys) // count)
    chosen = list(range(0, len(keys), step))[:count]
    before = await snapshot(bench)
    started = time.monotonic()
    await asyncio.to_thread(milvus_state.revoke, bench.milvus_uri, [pairs[i] for i in chosen])
    wanted = [(keys[i], "DriftCorrected") for i in chosen]
    await bench.watch.reasons.wait(wanted, 2 * bench.drift_interval + 60, bench.operator.alive)
    last = bench.watch.reasons.latest(wanted)
    corrected = sum(1 for w in wanted if w in bench.watch.reasons.at)
    await settle(bench)
    return {
        "revoked": count,
        "corrected": corrected,
        "seconds": (last - started) if last is not None and corrected == count else None,
        "cost": cost(before, await snapshot(bench), count),
    }
