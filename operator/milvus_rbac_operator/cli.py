"""`milvus-rbac-operator run` (any cluster) and `dev` (local control plane + embedded Milvus)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import kopf
import kubernetes
import uvloop

from milvus_rbac_operator import kubeclient, memory
from milvus_rbac_operator.connections import ConnectionRegistry, KubeAPI
from milvus_rbac_operator.controller import Runtime
from milvus_rbac_operator.handlers import build_registry
from milvus_rbac_operator.health import Health
from milvus_rbac_operator.kopfconfig import kopf_settings_for, watch_without_managed_fields
from milvus_rbac_operator.leader import LeaderLease
from milvus_rbac_operator.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="milvus-rbac-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator against the current cluster")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch only this namespace (repeatable; glob patterns allowed); default: all",
    )
    run.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, or in-cluster")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    dev = commands.add_parser(
        "dev", help="start a local kube-apiserver, etcd and Milvus, then run the operator on them"
    )
    dev.add_argument("--workdir", help="where certificates, data and logs go (default: a temp dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"milvus-rbac-operator: {exc}", file=sys.stderr)
        return 2
    if args.command == "dev":
        from milvus_rbac_operator.devenv.dev import run_dev  # devenv deps are optional

        return run_dev(settings, args.workdir)
    if args.namespaces:
        settings = dataclasses.replace(settings, namespaces=tuple(args.namespaces))
    return run_operator(settings, kubeconfig=args.kubeconfig, verbose=args.verbose)


class RoutineSuccessIsDebug(logging.Filter):
    """kopf logs every timer tick and every watch event it tracks at INFO; they are DEBUG to a
    reader."""

    _ROUTINE = re.compile(r"^(Timer '[^']+'|Handler '[^']*track_\w+') succeeded\.$")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and self._ROUTINE.match(str(record.msg)):
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


# How often memory freed after a burst of work is handed back (see memory.py).
TRIM_SECONDS = 10.0
# Events go out this many at once, behind status writes (kubeclient.EventPoster).
EVENT_CONNECTIONS = 4
EVENT_COMPONENT = "milvus-rbac-operator"


def run_operator(settings: Settings, kubeconfig: str | None = None, verbose: bool = False) -> int:
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN
    kopf.configure(
        verbose=verbose or settings.log_level == "DEBUG", log_format=log_format, log_prefix=True
    )
    logging.getLogger().setLevel("DEBUG" if verbose else settings.log_level)
    logging.getLogger("kopf.objects").addFilter(RoutineSuccessIsDebug())
    watch_without_managed_fields()
    api_client = kubernetes.client.ApiClient(kubeclient.load_configuration(kubeconfig))

    def login() -> kubernetes.client.Configuration:
        return kubeclient.load_configuration(kubeconfig)

    kube = KubeAPI(api_client, kubeclient.KubeWriter(login))
    events = kubeclient.EventPoster(
        kubeclient.KubeWriter(login, max_connections=EVENT_CONNECTIONS),
        component=EVENT_COMPONENT,
        instance=socket.gethostname(),
        default_namespace=settings.operator_namespace,
    )
    connections = ConnectionRegistry(
        kube,
        settings.timeout_seconds,
        settings.operator_namespace,
        settings.allowed_hosts,
        settings.connection_recheck_seconds,
    )
    runtime = Runtime(settings, connections, kube, events, kubeconfig)
    logging.getLogger(__name__).info(
        "watching %s", ", ".join(settings.namespaces) if settings.namespaces else "all namespaces"
    )
    identity = f"{socket.gethostname()}-{os.getpid()}"

    def make_operator(ready: asyncio.Event) -> Any:
        return kopf.operator(
            registry=build_registry(settings),
            settings=kopf_settings_for(settings),
            memo=kopf.Memo(runtime=runtime),
            namespaces=settings.namespaces,
            clusterwide=not settings.namespaces,
            standalone=True,  # no kopf peering: leader election below decides who acts
            # kopf's default identity asks the passwd database for the user name, which an
            # arbitrary container UID is not in.
            identity=identity,  # type: ignore[arg-type]
            ready_flag=ready,
        )

    # uvloop: the same coroutines on libuv; less CPU per watch event, request and RPC (README,
    # "Performance").
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(settings, runtime, api_client, identity, make_operator))


async def _serve(
    settings: Settings,
    runtime: Runtime,
    api_client: kubernetes.client.ApiClient,
    identity: str,
    make_operator: Callable[[asyncio.Event], Any],
) -> int:
    """Health first (a standby replica must answer its probes too), then the operator."""
    ready = asyncio.Event()
    health = Health(ready, runtime.connection_states, standby=settings.leader_election)
    runner = await health.serve(settings.health_listen) if settings.health_listen else None
    trimming = asyncio.create_task(memory.trim_now_and_then(TRIM_SECONDS))
    try:
        if not settings.leader_election:
            await make_operator(ready)
            return 0
        return await _run_as_leader(
            settings, api_client, identity, health, lambda: make_operator(ready)
        )
    finally:
        trimming.cancel()
        if runner is not None:
            await runner.cleanup()


async def _run_as_leader(
    settings: Settings,
    api_client: kubernetes.client.ApiClient,
    identity: str,
    health: Health,
    make_operator: Callable[[], Any],
) -> int:
    """Stand by until this replica holds the Lease; stop when it is lost (to be restarted)."""
    lease = LeaderLease(
        api_client,
        settings.leader_election_namespace,
        settings.lease_name,
        identity,
        settings.lease_duration_seconds,
        settings.lease_renew_seconds,
    )
    try:
        await lease.acquire()
    except asyncio.CancelledError:
        return 0
    health.standby = False
    lost = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(lost))
    running = asyncio.create_task(make_operator())
    waiting_for_loss = asyncio.create_task(lost.wait())
    await asyncio.wait({running, waiting_for_loss}, return_when=asyncio.FIRST_COMPLETED)
    keeper.cancel()
    if lost.is_set():
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        return 1
    waiting_for_loss.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
