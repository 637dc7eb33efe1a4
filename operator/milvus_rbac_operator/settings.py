"""One typed settings object, read from MRBO_* environment variables (flags override some)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PREFIX = "MRBO_"
BUILT_IN_PROTECTED_USERS = frozenset({"root"})


@dataclass(frozen=True)
class Settings:
    # Namespaces to watch; empty means every namespace.
    namespaces: tuple[str, ...] = ()
    # Bound on each Milvus call when neither the binding nor its connection sets one.
    timeout_seconds: float = 10.0
    # Transient failures (unreachable, timeout, rate limit): exponential backoff, capped.
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    # Things a person must create or fix (user, role, connection, Secret, credentials).
    not_found_retry_seconds: float = 30.0
    # How long a connection's client is trusted before its connection and Secret are read again
    # (a failed call, a spec change or the connection check reads them at once).
    connection_recheck_seconds: float = 10.0
    # How often each MilvusConnection's reachability and credentials are checked.
    connection_check_seconds: float = 60.0
    # How often each connection's grants are listed (one SelectUser call) to re-add missing ones.
    drift_interval_seconds: float = 180.0
    # Hosts any connection may name (globs, optionally host:port); checked before dialling, so
    # that tenants cannot use the operator to probe other services. Default: Kubernetes Services.
    allowed_hosts: tuple[str, ...] = ("*.svc", "*.svc.cluster.local")
    # Where the operator runs: ClusterMilvusConnection Secrets are read from here only, and the
    # Lease lives here. Empty: the pod's own namespace in a cluster, else `default`.
    operator_namespace: str = ""
    # Users whose roles are never added or removed (root always).
    protected_users: frozenset[str] = field(default=BUILT_IN_PROTECTED_USERS)
    log_level: str = "INFO"
    log_format: str = "plain"
    # On SIGTERM, how long Milvus calls in flight may take to finish and write their status.
    shutdown_grace_seconds: float = 20.0
    # Liveness/readiness endpoint; empty disables it.
    health_listen: str = ""
    finalizer: str = "rbac.milvus.io/finalizer"
    # With more than one replica: only the holder of this Lease acts, the others stand by.
    leader_election: bool = False
    leader_election_namespace: str = ""  # empty: operator_namespace
    lease_name: str = "milvus-rbac-operator"
    lease_duration_seconds: float = 15.0
    lease_renew_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for item in fields(cls):
            raw = env.get(PREFIX + item.name.upper())
            if raw is None or raw == "":
                continue
            values[item.name] = _parse(item.name, raw, item.type)
        settings = cls(**values)  # type: ignore[arg-type]
        operator_namespace = settings.operator_namespace or _pod_namespace() or "default"
        # `root` stays protected whatever the configuration says.
        return dataclasses.replace(
            settings,
            protected_users=settings.protected_users | BUILT_IN_PROTECTED_USERS,
            operator_namespace=operator_namespace,
            leader_election_namespace=settings.leader_election_namespace or operator_namespace,
        )


_POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _pod_namespace() -> str:
    try:
        return _POD_NAMESPACE.read_text().strip()
    except OSError:
        return ""


def _parse(name: str, raw: str, kind: object) -> object:
    kind = str(kind)
    if kind == "bool":
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{PREFIX}{name.upper()}={raw!r}: expected true or false")
        return raw.lower() in ("true", "1")
    try:
        if kind == "float":
            value = float(raw)
            if value <= 0:
                raise ValueError("must be positive")
            return value
        if kind in ("tuple[str, ...]", "frozenset[str]"):
            items = tuple(part.strip() for part in raw.split(",") if part.strip())
            return frozenset(items) if kind.startswith("frozenset") else items
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r}: {exc}") from exc
    return raw
