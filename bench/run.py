"""The benchmark: `.venv/bin/python -m bench.run [--sizes 100,1000] [--with-10k] [--repeat N]`.

Starts the local control plane and embedded Milvus (milvus_rbac_operator.devenv, as `make dev`),
measures the floor, then the operator as its own process; prints a table, writes a JSON file.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import milvus_state, report
from bench.floor import NAMESPACE as FLOOR_NAMESPACE
from bench.floor import Floor
from bench.kube import BindingWatch, Kube, KubeAccess
from bench.operator_proc import OperatorProcess
from bench.phases import NAMESPACE, Bench, bulk_phase, prepare_connection, single_phase
from bench.watchers import WatchersProcess
from milvus_rbac_operator.devenv import REPO_ROOT, LocalEnvironment, remove_admission_policy

RESULTS = REPO_ROOT / "bench" / "results"


def say(line: str) -> None:
    print(f"[bench] {line}", flush=True)


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--sizes: {exc}") from exc
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--sizes: positive integers, comma-separated")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--sizes", type=_sizes, default=[100, 1000], help="bulk sizes (100,1000)")
    parser.add_argument("--with-10k", action="store_true", help="add the 10,000-binding case")
    parser.add_argument("--repeat", type=int, default=300, help="single-binding repetitions (300)")
    parser.add_argument(
        "--changes", type=int, default=100, help="spec changes in the single phase (100)"
    )
    parser.add_argument("--out", type=Path, help="JSON file (bench/results/<timestamp>.json)")
    parser.add_argument(
        "--drift-interval", type=float, default=10.0, help="operator drift interval (10 s)"
    )
    parser.add_argument(
        "--steady-intervals", type=int, default=3, help="drift intervals per steady window (3)"
    )
    parser.add_argument(
        "--drift-sample", type=int, default=10, help="grants revoked to time drift repair (10)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight for bulk phases (16)"
    )
    parser.add_argument("--roles", type=int, default=10, help="Milvus roles to spread over (10)")
    parser.add_argument(
        "--no-admission-policy",
        action="store_true",
        help="take deploy/admission away: the operator writes the finalizer and intent itself",
    )
    parser.add_argument("--workdir", type=Path, help="keep certificates, data and logs here")
    parser.add_argument(
        "--profile-operator",
        type=Path,
        metavar="FILE",
        help="run the operator under pyinstrument; .html or text report written at the end",
    )
    args = parser.parse_args(argv)
    if args.with_10k and 10000 not in args.sizes:
        args.sizes = sorted([*args.sizes, 10000])
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _git(*args: str) -> str:
    try:
        found = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return found.stdout.strip()


def meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_start": list(os.getloadavg()),
        "command": " ".join(sys.argv),
        "settings": {
            "sizes": args.sizes,
            "repeat": args.repeat,
            "changes": args.changes,
            "drift_interval": args.drift_interval,
            "steady_intervals": args.steady_intervals,
            "drift_sample": args.drift_sample,
            "concurrency": args.concurrency,
            "admission_policy": not args.no_admission_policy,
            "roles": args.roles,
        },
    }


async def measure(env: LocalEnvironment, args: argparse.Namespace, results: dict[str, Any]) -> None:
    assert env.milvus is not None
    uri = env.milvus.uri
    users = max([*args.sizes, args.repeat])
    pairs = [
        (milvus_state.user_name(i), milvus_state.role_name(i, args.roles)) for i in range(users)
    ]
    floor_pairs = [
        (milvus_state.floor_user_name(i), milvus_state.role_name(i, args.roles))
        for i in range(args.repeat)
    ]
    access = KubeAccess.from_kubeconfig(env.kubeconfig)
    async with (
        Kube(access, connections=max(args.concurrency * 2, 16)) as kube,
        WatchersProcess(env.kubeconfig, FLOOR_NAMESPACE, env.workdir / "floor-watchers.log"),
        Floor(kube, uri, floor_pairs) as floor,
    ):
        say("Floor: the bulk sizes (single units come in turns with the operator's) ...")
        await floor.measure_bulk(
            {n: pairs[:n] for n in args.sizes}, sorted({1, args.concurrency}), say
        )
        results["floor"] = floor.result.as_json()
        results["milvus_after_floor"] = milvus_state.compare(
            set(), await asyncio.to_thread(milvus_state.bench_grants, uri)
        ).as_json()

        operator = OperatorProcess(
            env.kubeconfig,
            env.workdir / "operator.log",
            args.drift_interval,
            NAMESPACE,
            args.profile_operator.resolve() if args.profile_operator else None,
        )
        watch = BindingWatch(kube, NAMESPACE)
        watch.start()
        await asyncio.wait_for(watch.listed.wait(), 60)
        say(f"Starting the operator (log: {operator.log_path}) ...")
        await operator.start()
        try:
            bench = Bench(
                kube, watch, operator, uri, args.roles, args.drift_interval, args.concurrency, say
            )
            await prepare_connection(bench)
            results["operator"] = {"started_rss_bytes": operator.rss_bytes()}
            say(
                f"Single bindings: {args.repeat} applied, changed and deleted one at a time, "
                "in turns with the floor's units ..."
            )
            results["single"] = await single_phase(bench, args.repeat, args.changes, floor)
            results["floor"] = floor.result.as_json()
            results["bulk"] = {}
            for size in args.sizes:
                say(f"Bulk: {size} bindings at once ...")
                results["bulk"][str(size)] = await bulk_phase(
                    bench, size, args.steady_intervals, args.drift_sample
                )
            results["operator"]["metrics_available"] = bool(operator.metrics_available)
            results["operator"]["watch_events"] = watch.events
        finally:
            await watch.stop()
            code = await operator.stop()
            results.setdefault("operator", {})["exit_code"] = code
            if code not in (0, None):
                say(f"operator exited {code}; last log lines:\n{operator.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mrbo-bench-"))
    results: dict[str, Any] = {"meta": meta(args)}
    env = LocalEnvironment(workdir, say=say)
    started = time.monotonic()
    failed = False
    try:
        env.start()
        assert env.milvus is not None
        if args.no_admission_policy:
            say("Taking the admission policy away (deploy/admission) ...")
            remove_admission_policy(env.kubeconfig)
        users = max([*args.sizes, args.repeat])
        say(
            f"Creating {users} users (and {args.repeat} for the floor) and {args.roles} roles"
            " in Milvus ..."
        )
        milvus_state.seed(env.milvus.uri, users, args.roles, say, floor_users=args.repeat)
        asyncio.run(measure(env, args, results))
    except KeyboardInterrupt:
        say("interrupted")
        failed = True
    except Exception as exc:
        say(f"failed: {type(exc).__name__}: {exc} (logs in {workdir})")
        results["error"] = f"{type(exc).__name__}: {exc}"
        failed = True
    finally:
        env.stop()
    results["meta"]["seconds"] = time.monotonic() - started
    results["meta"]["load_average_end"] = list(os.getloadavg())
    items = report.figures(results)
    results["figures"] = [f.as_json() for f in items]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print()
    print(report.render(items))
    counts = report.verdicts(items)
    print()
    say(
        f"{counts['PASS']} PASS, {counts['MISS']} MISS, {counts['n/a']} n/a in "
        f"{results['meta']['seconds']:.0f} s; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs. Results: {out}"
    )
    if failed:
        return 1
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
