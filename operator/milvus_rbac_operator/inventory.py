"""What the live objects say, free of I/O: who claims which pair, on which Milvus, and what drifted.

Fed by kopf indexes, which are rebuilt from the API server's watch after every restart: nothing
here is memory of the operator's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from milvus_rbac_operator.model import ConnectionKey, RolePair
from milvus_rbac_operator.status import Reason

# The pair a binding is about to add, written before the call: after a crash between Milvus's
# yes and the status write, this is how the grant is still found and removed later.
INTENT_ANNOTATION = "rbac.milvus.io/intent"
# Set by the operator when a ClusterMilvusConnection's policy (or a namespace's labels) changed
# what a binding may hold: the binding's own handler then reconciles it, so only one writer acts.
RECONCILE_REQUEST_ANNOTATION = "rbac.milvus.io/policy-check"
# Set by a connection's drift check when a binding's grant is missing from Milvus; the binding's
# own handler adds it again and records the request in status.driftCheck. The handler is the
# only writer of a binding, so a re-add can never race the binding's deletion.
DRIFT_ANNOTATION = "rbac.milvus.io/drift-check"


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


@dataclass(frozen=True, slots=True)
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
    ready_reason: str = ""
    policy_check: str = ""
    drift_requested: str = ""  # the drift-check annotation
    drift_handled: str = ""  # status.driftCheck: the last request the binding acted on

    @property
    def drift_pending(self) -> bool:
        return bool(self.drift_requested) and self.drift_requested != self.drift_handled

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
    conditions = [c for c in status.get("conditions") or () if isinstance(c, Mapping)]
    ready_condition = next((c for c in conditions if c.get("type") == "Ready"), {})
    annotations = meta.get("annotations") or {}
    return BindingRecord(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        desired=desired,
        applied=RolePair.from_status(status.get("applied")),
        deleting=bool(meta.get("deletionTimestamp")),
        ready=ready_condition.get("status") == "True",
        ready_reason=str(ready_condition.get("reason") or ""),
        policy_check=str(annotations.get(RECONCILE_REQUEST_ANNOTATION) or ""),
        drift_requested=str(annotations.get(DRIFT_ANNOTATION) or ""),
        drift_handled=str(status.get("driftCheck") or ""),
    )


def holders(
    pair: RolePair,
    namespace: str,
    me: str,
    candidates: Iterable[BindingRecord],
    endpoint_of: Mapping[ConnectionKey, str],
    may_hold: Callable[[BindingRecord], bool] = lambda _: True,
) -> tuple[str, ...]:
    """Other live bindings whose spec wants `pair` on the same Milvus: its removal must wait.

    `may_hold` leaves out bindings their connection's policy no longer allows: otherwise two
    bindings that a tightened policy forbids would each keep the grant for the other.
    """
    key = pair.connection.key(namespace)
    mine = endpoint_of.get(key, f"{key[0]}/{key[1]}")
    wanted = []
    for record in candidates:
        desired = record.desired
        if record.ref == me or record.deleting or desired is None:
            continue
        if (desired.username, desired.role_name) != (pair.username, pair.role_name):
            continue
        theirs_key = desired.connection.key(record.namespace)
        theirs = endpoint_of.get(theirs_key, f"{theirs_key[0]}/{theirs_key[1]}")
        if theirs == mine and may_hold(record):
            wanted.append(record.ref)
    return tuple(sorted(set(wanted)))


def drifted(
    records: Iterable[BindingRecord], granted: Mapping[str, frozenset[str]]
) -> list[BindingRecord]:
    """Ready bindings whose confirmed grant is missing from a full Milvus listing.

    A binding already asked to re-add its grant is left alone until it has acted on that.
    """
    missing = []
    for record in records:
        applied = record.applied
        if not record.ready or record.deleting or applied is None or applied != record.desired:
            continue
        if record.drift_pending:
            continue
        if applied.role_name not in granted.get(applied.username, frozenset()):
            missing.append(record)
    return missing


def connections_used(record: BindingRecord, intent: RolePair | None) -> set[ConnectionKey]:
    """Every connection the binding wants or may still have to remove a grant through."""
    pairs = [p for p in (record.desired, record.applied, intent) if p is not None]
    return {pair.connection.key(record.namespace) for pair in pairs}


def pair_keys(record: BindingRecord) -> set[tuple[str, str]]:
    """(username, roleName) the binding wants: what a removal elsewhere must respect."""
    return {(record.desired.username, record.desired.role_name)} if record.desired else set()


def needs_policy_check(record: BindingRecord, allowed: bool, digest: str) -> bool:
    """Whether the policy's verdict on a binding differs from what its status shows.

    `digest` names the verdict's inputs: a request already made for them is not made again.
    """
    if record.deleting or record.policy_check == digest:
        return False
    shows_forbidden = record.ready_reason == Reason.FORBIDDEN
    return allowed == shows_forbidden


def readiness_label(status: Mapping[str, Any]) -> str:
    """The status of a binding's Ready condition: True, False, or Unknown before the first one."""
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return str(condition.get("status") or "Unknown")
    return "Unknown"
