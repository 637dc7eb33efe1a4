"""What the live objects say, free of I/O: who claims which pair, on which Milvus, and what drifted.

Fed by kopf indexes, which are rebuilt from the API server's watch after every restart: nothing
here is memory of the operator's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from milvus_rbac_operator.model import RolePair

# The pair a binding is about to add, written before the call: after a crash between Milvus's
# yes and the status write, this is how the grant is still found and removed later.
INTENT_ANNOTATION = "rbac.milvus.io/intent"


def intent_from(annotations: Mapping[str, str] | None) -> RolePair | None:
    raw = (annotations or {}).get(INTENT_ANNOTATION)
    if not raw:
        return None
    try:
        return RolePair.from_status(json.loads(raw))
    except ValueError:
        return None


def intent_annotation(pair: RolePair) -> str:
    return json.dumps(pair.to_status(), separators=(",", ":"), sort_keys=True)


def claimed_pairs(applied: RolePair | None, intent: RolePair | None) -> list[RolePair]:
    """Pairs this binding may have established: confirmed first, then the last intent."""
    pairs = [pair for pair in (applied, intent) if pair is not None]
    return list(dict.fromkeys(pairs))


def endpoint_key(spec: Mapping[str, Any]) -> str:
    """One Milvus, however its URI is spelt: scheme, host and port, plus the database."""
    uri = str(spec.get("uri") or "")
    parts = urlsplit(uri)
    scheme = {"tcp": "http", "grpc": "http"}.get(parts.scheme.lower(), parts.scheme.lower())
    default_port = 443 if scheme == "https" else 19530
    try:
        port = parts.port or default_port
    except ValueError:
        return uri
    host = (parts.hostname or "").lower()
    host = "127.0.0.1" if host == "localhost" else host
    return f"{scheme}://{host}:{port}/{spec.get('database') or ''}"


@dataclass(frozen=True)
class BindingRecord:
    """One MilvusRoleBinding as the inventory sees it."""

    namespace: str
    name: str
    uid: str
    generation: int
    desired: RolePair | None
    applied: RolePair | None
    deleting: bool
    ready: bool
    conditions: tuple[Mapping[str, Any], ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def binding_record(
    namespace: str,
    name: str,
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
) -> BindingRecord:
    try:
        desired: RolePair | None = RolePair.from_spec(spec)
    except (KeyError, TypeError):
        desired = None
    conditions = tuple(dict(c) for c in status.get("conditions") or () if isinstance(c, Mapping))
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return BindingRecord(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        desired=desired,
        applied=RolePair.from_status(status.get("applied")),
        deleting=bool(meta.get("deletionTimestamp")),
        ready=ready,
        conditions=conditions,
    )


def holders(
    pair: RolePair,
    namespace: str,
    me: str,
    candidates: Iterable[BindingRecord],
    endpoint_of: Mapping[tuple[str, str], str],
) -> tuple[str, ...]:
    """Other live bindings whose spec wants `pair` on the same Milvus: its removal must wait."""
    mine = endpoint_of.get((namespace, pair.connection), f"{namespace}/{pair.connection}")
    wanted = []
    for record in candidates:
        desired = record.desired
        if record.ref == me or record.deleting or desired is None:
            continue
        if (desired.username, desired.role_name) != (pair.username, pair.role_name):
            continue
        theirs = endpoint_of.get(
            (record.namespace, desired.connection), f"{record.namespace}/{desired.connection}"
        )
        if theirs == mine:
            wanted.append(record.ref)
    return tuple(sorted(set(wanted)))


def drifted(
    records: Iterable[BindingRecord], granted: Mapping[str, frozenset[str]]
) -> list[BindingRecord]:
    """Ready bindings whose confirmed grant is missing from a full Milvus listing."""
    missing = []
    for record in records:
        applied = record.applied
        if not record.ready or record.deleting or applied is None or applied != record.desired:
            continue
        if applied.role_name not in granted.get(applied.username, frozenset()):
            missing.append(record)
    return missing


def connections_used(record: BindingRecord, intent: RolePair | None) -> set[tuple[str, str]]:
    """(namespace, connection) of every pair the binding wants or may still have to remove."""
    pairs = [p for p in (record.desired, record.applied, intent) if p is not None]
    return {(record.namespace, pair.connection) for pair in pairs}


def pair_keys(record: BindingRecord) -> set[tuple[str, str]]:
    """(username, roleName) the binding wants: what a removal elsewhere must respect."""
    return {(record.desired.username, record.desired.role_name)} if record.desired else set()
