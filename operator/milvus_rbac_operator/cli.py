"""`milvus-rbac-operator run` (any cluster) and `dev` (local control plane + embedded Milvus)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence

import kopf
import kubernetes

from milvus_rbac_operator import kubeclient
from milvus_rbac_operator.connections import ConnectionRegistry, KubeAPI
from milvus_rbac_operator.controller import Runtime
from milvus_rbac_operator.handlers import build_registry, kopf_settings_for
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


def run_operator(settings: Settings, kubeconfig: str | None = None, verbose: bool = False) -> int:
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN
    kopf.configure(
        verbose=verbose or settings.log_level == "DEBUG", log_format=log_format, log_prefix=True
    )
    logging.getLogger().setLevel("DEBUG" if verbose else settings.log_level)
    api_client = kubernetes.client.ApiClient(kubeclient.load_configuration(kubeconfig))
    kube = KubeAPI(api_client)
    runtime = Runtime(
        settings, ConnectionRegistry(kube, settings.timeout_seconds), kube, kubeconfig
    )
    logging.getLogger(__name__).info(
        "watching %s", ", ".join(settings.namespaces) if settings.namespaces else "all namespaces"
    )
    asyncio.run(
        kopf.operator(
            registry=build_registry(settings),
            settings=kopf_settings_for(settings),
            memo=kopf.Memo(runtime=runtime),
            namespaces=settings.namespaces,
            clusterwide=not settings.namespaces,
            standalone=True,
            liveness_endpoint=f"http://{settings.health_listen}/healthz"
            if settings.health_listen
            else None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
