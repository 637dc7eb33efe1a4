"""What the live objects say, free of I/O: who claims which pair, on which Milvus, and what drifted.

LiveObjects is filled from one LIST per kind at start-up and kept current by the watch (see
handlers.py): after a restart it is rebuilt from the API server, so nothing here is memory of
the operator's own. (kopf's own indexes block start-up for a time that grows with the cube of
the number of objects; at 3,000 bindings that was a minute before the first reconcile.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from milvus_rbac_operator import policy
from milvus_rbac_operator.model import ConnectionKey, RolePair
from milvus_rbac_operator.policy import Policy
from milvus_rbac_operator.status import Reason

# The pair a binding is about to add, written before the call: after a crash between Milvus's
# yes and the status write, this is how the grant is still found and removed later. The
# operator writes it right before an add; the admission policy (deploy/admission/) writes it
# when a binding is created, marked `"by":"admission"`, so that the first add needs no write.
INTENT_ANNOTATION = "rbac.milvus.io/intent"
# The mark of an intent written at admission: the spec's pair, before any check of the operator.
ADMISSION = "admission"
# Set by the operator when a ClusterMilvusConnection's policy (or a namespace's labels) changed
# what a binding may hold: the binding's own handler then reconciles it, so only one writer acts.
RECONCILE_REQUEST_ANNOTATION = "rbac.milvus.io/policy-check"
# Set by a connection's drift check when a binding's grant is missing from Milvus; the binding's
# own handler adds it again and records the request in status.driftCheck. The handler is the
# only writer of a binding, so a re-add can never race the binding's deletion.
DRIFT_ANNOTATION = "rbac.milvus.io/drift-check"


def _intent_fields(annotations: Mapping[str, str] | None) -> Mapping[str, Any]:
    raw = (annotations or {}).get(INTENT_ANNOTATION)
    if not raw:
        return {}
    try:
        fields = json.loads(raw)
    except ValueError:
        return {}
    return fields if isinstance(fields, Mapping) else {}


def intent_from(annotations: Mapping[str, str] | None) -> RolePair | None:
    return RolePair.from_status(_intent_fields(annotations) or None)


def intent_annotation(pair: RolePair) -> str:
    return json.dumps(pair.to_status(), separators=(",", ":"), sort_keys=True)


def provisional_intent(annotations: Mapping[str, str] | None, status: Mapping[str, Any]) -> bool:
    """The intent was written at admission and no Milvus call of this binding is on record.

    Such an intent names the spec's pair before the operator looked at it: the operator may
    never have been able to call Milvus for it (no such connection, no Secret). It is a claim
    only where a removal can still be made; anything the operator did call is in status
    (resStatus, applied) from the first status write on. Only a crash between Milvus's yes and
    that write leaves a call unrecorded: the next reconcile makes the same call again.
    """
    if _intent_fields(annotations).get("by") != ADMISSION:
        return False
    return not status.get("resStatus") and status.get("applied") is None


def may_hold_grant(meta: Mapping[str, Any], status: Mapping[str, Any], finalizer: str) -> bool:
    """Whether deleting the binding must wait for its release: it may have a grant in Milvus.

    The intent, status.applied or the operator's finalizer each say so. The finalizer counts on
    its own: kopf drops a finalizer that no handler requires without running any handler, so a
    rule on the intent alone would let a grant go unremoved once the annotation was stripped
    (by hand, or by a tool that replaces metadata).
    """
    return (
        _has_finalizer(meta, finalizer)
        or INTENT_ANNOTATION in (meta.get("annotations") or {})
        or status.get("applied") is not None
    )


def deleted_unreleased(meta: Mapping[str, Any], finalizer: str) -> bool:
    """A binding's last copy, as its deletion's watch event shows it: gone without a release?

    After a normal deletion the copy has a deletionTimestamp (and may still list the
    finalizer). With the finalizer and no deletionTimestamp, a DELETE removed the object at once
    although the finalizer was there: it had read the object just before the finalizer's write.
    """
    return _has_finalizer(meta, finalizer) and not meta.get("deletionTimestamp")


def _has_finalizer(meta: Mapping[str, Any], finalizer: str) -> bool:
    return finalizer in (meta.get("finalizers") or ())


def claimed_pairs(applied: RolePair | None, intent: RolePair | None) -> list[RolePair]:
    """Pairs this binding may have established: confirmed first, then the last intent."""
    pairs = [pair for pair in (applied, intent) if pair is not None]
    return list(dict.fromkeys(pairs))


@dataclass(frozen=True)
class Claims:
    """What a binding may have established in Milvus, as its status and intent show it."""

    pairs: list[RolePair]
    # The intent, when it is the admission's and no call is on record (provisional_intent).
    provisional: RolePair | None = None


def claims(
    applied: RolePair | None,
    intent: RolePair | None,
    intent_forbidden: bool,
    intent_provisional: bool,
) -> Claims:
    """status.applied, and the intent unless the connection's policy forbids its pair.

    Anyone who may edit a binding may write the intent annotation, and through a
    ClusterMilvusConnection an intent its policy does not allow is ignored: otherwise a tenant
    could have the operator remove a grant it has no say over. status.applied is the operator's
    own (tenants do not get the status subresource).
    """
    if intent is not None and intent != applied and intent_forbidden:
        intent = None
    provisional = intent if intent is not None and intent_provisional else None
    return Claims(claimed_pairs(applied, intent), provisional)


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
    intent: RolePair | None = None  # the pair it was last about to add (annotation)
    observed_generation: int = 0
    # The intent is the admission's and no call is on record (see provisional_intent).
    intent_provisional: bool = False

    @property
    def reconciled(self) -> bool:
        """The operator has acted on its current spec at least once (status says so)."""
        return self.observed_generation >= self.generation

    @property
    def acted_intent(self) -> RolePair | None:
        """The intent, once the operator has acted on it (a provisional one shows nothing)."""
        return None if self.intent_provisional else self.intent

    @property
    def claims_desired(self) -> bool:
        """Its status or intent shows it added (or is adding) the pair its spec wants."""
        return self.desired is not None and self.desired in (self.applied, self.acted_intent)

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
    # Spec, status and intent usually name one pair: the record keeps one copy of it.
    applied = _same_or(desired, RolePair.from_status(status.get("applied")))
    intent = _same_or(desired, intent_from(annotations))
    return BindingRecord(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        desired=desired,
        applied=applied,
        deleting=bool(meta.get("deletionTimestamp")),
        ready=ready_condition.get("status") == "True",
        ready_reason=str(ready_condition.get("reason") or ""),
        policy_check=str(annotations.get(RECONCILE_REQUEST_ANNOTATION) or ""),
        drift_requested=str(annotations.get(DRIFT_ANNOTATION) or ""),
        drift_handled=str(status.get("driftCheck") or ""),
        intent=intent,
        observed_generation=int(status.get("observedGeneration") or 0),
        intent_provisional=intent is not None and provisional_intent(annotations, status),
    )


def _same_or(kept: RolePair | None, pair: RolePair | None) -> RolePair | None:
    return kept if pair == kept else pair


def endpoint_or_key(endpoint_of: Mapping[ConnectionKey, str], key: ConnectionKey) -> str:
    """The Milvus a connection points at; the connection itself while its endpoint is unknown."""
    return endpoint_of.get(key, f"{key[0]}/{key[1]}")


@dataclass(frozen=True)
class Sharers:
    """The other live bindings that want a pair on the same Milvus, as a removal sees them."""

    holding: tuple[str, ...] = ()  # hold it and still want it: the removal is skipped
    adding: tuple[str, ...] = ()  # want it, not acted on yet: the removal waits for them


def sharers(
    pair: RolePair,
    namespace: str,
    my_uid: str,
    candidates: Iterable[BindingRecord],
    endpoint_of: Mapping[ConnectionKey, str],
    may_hold: Callable[[BindingRecord], bool] = lambda _: True,
    adding: Mapping[str, RolePair] | None = None,
) -> Sharers:
    """Who else wants `pair` on the same Milvus, and whether they hold it already.

    "Else" is by uid: a binding deleted at once and created again under its name is another one.
    Holding means its status or intent shows the pair, or (`adding`, by uid) this process is
    adding it for them and the watch has not shown that yet. One that wants the pair but has
    not been acted on for that spec is about to add it: skipping the removal for it could leave
    the grant to nobody if its spec moves on first, and removing now would take the grant away
    for a moment, so the removal waits. One acted on that still does not hold it (its connection
    is unusable, say) keeps nothing. `may_hold` leaves out bindings their connection's policy no
    longer allows: otherwise two that a tightened policy forbids would keep it for each other.
    """
    adding = adding or {}
    mine = endpoint_or_key(endpoint_of, pair.connection.key(namespace))
    holding, about_to_add = set(), set()
    for record in candidates:
        desired = record.desired
        if record.uid == my_uid or record.deleting or desired is None:
            continue
        if (desired.username, desired.role_name) != (pair.username, pair.role_name):
            continue
        theirs = endpoint_or_key(endpoint_of, desired.connection.key(record.namespace))
        if theirs != mine or not may_hold(record):
            continue
        if record.claims_desired or adding.get(record.uid) == desired:
            holding.add(record.ref)
        elif not record.reconciled:
            about_to_add.add(record.ref)
    return Sharers(tuple(sorted(holding)), tuple(sorted(about_to_add)))


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


def connections_used(record: BindingRecord) -> set[ConnectionKey]:
    """Every connection the binding wants or may still have to remove a grant through."""
    pairs = [p for p in (record.desired, record.applied, record.intent) if p is not None]
    return {pair.connection.key(record.namespace) for pair in pairs}


def holds_through(record: BindingRecord, key: ConnectionKey) -> bool:
    """Whether a binding may have a grant to remove through this connection (applied, intent).

    A provisional intent holds nothing: no call through the connection is on record.
    """
    pairs = [p for p in (record.applied, record.acted_intent) if p is not None]
    return any(pair.connection.key(record.namespace) == key for pair in pairs)


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


@dataclass(frozen=True, slots=True)
class ClusterConnectionRecord:
    """A ClusterMilvusConnection as the inventory sees it: where it points, what it allows."""

    endpoint: str
    policy: Policy


def cluster_connection_record(spec: Mapping[str, Any]) -> ClusterConnectionRecord:
    return ClusterConnectionRecord(endpoint_key(spec), policy.policy_from_spec(spec))


class _Groups:
    """key -> {uid: record}: each binding filed under every key it belongs to."""

    def __init__(self) -> None:
        self._groups: dict[Any, dict[str, BindingRecord]] = {}

    def add(self, keys: Iterable[Any], record: BindingRecord) -> None:
        for key in keys:
            self._groups.setdefault(key, {})[record.uid] = record

    def remove(self, keys: Iterable[Any], uid: str) -> None:
        for key in keys:
            group = self._groups.get(key)
            if group is not None:
                group.pop(uid, None)
                if not group:
                    del self._groups[key]

    def get(self, key: Any) -> list[BindingRecord]:
        return list(self._groups.get(key, {}).values())


class LiveObjects:
    """The live bindings, connections and namespace labels, and the questions asked of them."""

    def __init__(self) -> None:
        self._bindings: dict[str, BindingRecord] = {}
        self._by_pair = _Groups()
        self._by_connection = _Groups()
        self._cluster_by_namespace = _Groups()
        self.connection_endpoints: dict[ConnectionKey, str] = {}
        self.cluster_connections: dict[str, ClusterConnectionRecord] = {}
        self.namespace_labels: dict[str, dict[str, str]] = {}
        # uid -> the pair this process is adding for it, until the watch shows the claim.
        self._adding: dict[str, RolePair] = {}

    @staticmethod
    def _filing(record: BindingRecord) -> tuple[set[Any], set[Any], set[Any]]:
        desired = record.desired
        in_cluster = {record.namespace} if desired and desired.connection.cluster_scoped else set()
        return pair_keys(record), connections_used(record), in_cluster

    def put_binding(self, record: BindingRecord) -> None:
        self._unfile(record.uid)
        self._bindings[record.uid] = record
        noted = self._adding.get(record.uid)
        if noted is not None and (record.desired != noted or record.claims_desired):
            del self._adding[record.uid]  # the watch caught up, or the spec moved on
        pairs, connections, in_cluster = self._filing(record)
        self._by_pair.add(pairs, record)
        self._by_connection.add(connections, record)
        self._cluster_by_namespace.add(in_cluster, record)

    def note_adding(self, uid: str, pair: RolePair) -> None:
        """A binding's own handler is adding `pair`: its record shows that only later."""
        self._adding[uid] = pair

    def drop_binding(self, uid: str) -> None:
        self._unfile(uid)
        self._adding.pop(uid, None)

    def _unfile(self, uid: str) -> None:
        old = self._bindings.pop(uid, None)
        if old is None:
            return
        pairs, connections, in_cluster = self._filing(old)
        self._by_pair.remove(pairs, uid)
        self._by_connection.remove(connections, uid)
        self._cluster_by_namespace.remove(in_cluster, uid)

    def users_of(self, key: ConnectionKey) -> list[BindingRecord]:
        """Bindings that want, hold or may hold a grant through this connection."""
        return self._by_connection.get(key)

    def cluster_bindings_in(self, namespace: str) -> list[BindingRecord]:
        return self._cluster_by_namespace.get(namespace)

    def readiness_counts(self) -> dict[str, int]:
        counts = {"true": 0, "false": 0, "unknown": 0}
        for record in self._bindings.values():
            state = "true" if record.ready else ("false" if record.ready_reason else "unknown")
            counts[state] += 1
        return counts

    def cluster_connection(self, name: str) -> ClusterConnectionRecord | None:
        return self.cluster_connections.get(name)

    def labels_of(self, namespace: str) -> Mapping[str, str] | None:
        return self.namespace_labels.get(namespace)

    def endpoint_of(self, key: ConnectionKey) -> str | None:
        if key[0] == "":
            found = self.cluster_connection(key[1])
            return found.endpoint if found else None
        return self.connection_endpoints.get(key)

    def may_hold(self, record: BindingRecord) -> bool:
        """Whether a binding's connection (still) lets it hold its desired pair."""
        desired = record.desired
        if desired is None or not desired.connection.cluster_scoped:
            return True
        found = self.cluster_connection(desired.connection.name)
        if found is None:  # not seen yet: keep what it may hold rather than revoke too much
            return True
        refusal = policy.forbidden(
            found.policy,
            desired.connection.name,
            record.namespace,
            self.labels_of(record.namespace),
            desired.username,
            desired.role_name,
        )
        return refusal is None

    def sharers(self, pair: RolePair, namespace: str, my_uid: str) -> Sharers:
        """The other live bindings that want the pair on the same Milvus."""
        return sharers(
            pair,
            namespace,
            my_uid,
            self._by_pair.get((pair.username, pair.role_name)),
            _Endpoints(self),
            self.may_hold,
            self._adding,
        )

    def grant_site(self, pair: RolePair, namespace: str) -> tuple[str, str, str]:
        """Where a grant lives: the Milvus endpoint, the username and the roleName."""
        endpoint = endpoint_or_key(_Endpoints(self), pair.connection.key(namespace))
        return endpoint, pair.username, pair.role_name


class _Endpoints(Mapping[ConnectionKey, str]):
    """Both connection kinds' endpoints, looked up only for the keys asked for."""

    def __init__(self, live: LiveObjects) -> None:
        self._live = live

    def __getitem__(self, key: ConnectionKey) -> str:
        found = self._live.endpoint_of(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[ConnectionKey]:
        yield from self._live.connection_endpoints
        yield from (("", name) for name in self._live.cluster_connections)

    def __len__(self) -> int:
        return len(self._live.connection_endpoints) + len(self._live.cluster_connections)
