"""The shell between kopf and the core: gather inputs, run the plan, write status and Events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from milvus_rbac_operator import inventory, metrics, policy, reconcile, status
from milvus_rbac_operator.connections import (
    BINDINGS,
    CLUSTER_CONNECTIONS,
    CONNECTIONS,
    ConnectionRegistry,
    KubeAPI,
)
from milvus_rbac_operator.inventory import BindingRecord, LiveObjects
from milvus_rbac_operator.kubeclient import EventPoster
from milvus_rbac_operator.model import (
    CLUSTER_CONNECTION,
    ConnectionRef,
    Operation,
    RolePair,
    utcnow,
)
from milvus_rbac_operator.reconcile import Progress, UnusableConnectionError
from milvus_rbac_operator.settings import Settings
from milvus_rbac_operator.sharing import LiveSharing, PairLocks
from milvus_rbac_operator.status import Reason


@dataclass
class Runtime:
    """What every handler needs; lives in kopf's memo for the operator's lifetime."""

    settings: Settings
    connections: ConnectionRegistry
    kube: KubeAPI
    events: EventPoster
    kubeconfig: str | None = None
    # "namespace/name" -> the last Ready reason of each MilvusConnection, for /healthz, /readyz.
    connection_states: dict[str, str] = field(default_factory=dict)
    # What the watch has shown (see inventory.py): filled at start-up, kept by handlers.py.
    live: LiveObjects = field(default_factory=LiveObjects)
    # Calls on one grant site, and decisions to remove it, one at a time (see sharing.py).
    pair_locks: PairLocks = field(default_factory=PairLocks)


def _sharing(runtime: Runtime, live: LiveObjects, meta: Any, retry: int) -> LiveSharing:
    return LiveSharing(runtime.pair_locks, live, meta.namespace or "", str(meta.uid), retry)


# Events go out just after the status write they describe: posted at once, each one competed
# with that write for the API server and made the binding show Ready later (README,
# "Performance").
EVENT_DELAY_SECONDS = 0.05


def _post_event(runtime: Runtime, body: Any, kind: str, reason: str, message: str) -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(EVENT_DELAY_SECONDS, runtime.events.post, body, kind, reason, message)


def _record(
    runtime: Runtime, body: Any, progress: Progress, logger: logging.Logger, drift: bool = False
) -> None:
    """One Event per Milvus call, and one per removal skipped for another binding."""
    namespace = body.get("metadata", {}).get("namespace") or ""
    for call, answer in zip(progress.made, progress.answers, strict=True):
        if reconcile.connection_suspect(answer):
            runtime.connections.invalidate(call.pair.connection.key(namespace))
    for answer in progress.answers:
        adding = answer.operation is Operation.ADD_USER_TO_ROLE
        event = status.drift_event(answer) if drift and adding else status.event_for(answer)
        _post_event(runtime, body, event.type, event.reason, event.message)
        logger.info("%s", event.message)
    for call in progress.kept:
        message = (
            f"RemoveUserFromRole({call.pair.username}, {call.pair.role_name}) skipped: "
            f"still wanted by {', '.join(call.kept_for)}"
        )
        _post_event(runtime, body, "Normal", "RemovalSkipped", message)
        logger.info("%s", message)
    for call in progress.dropped:
        logger.info(
            "RemoveUserFromRole(%s, %s) not needed: connection %s cannot be used, and no call "
            "for this binding is on record",
            call.pair.username,
            call.pair.role_name,
            call.pair.connection,
        )


def _retry_delay(runtime: Runtime, progress: Progress, retry: int) -> float:
    settings = runtime.settings
    return reconcile.retry_delay(
        progress.outcome,
        retry,
        settings.retry_initial_seconds,
        settings.retry_max_seconds,
        settings.not_found_retry_seconds,
        progress.waiting,
    )


def _retry_or_done(runtime: Runtime, progress: Progress, retry: int) -> None:
    if progress.readiness is None:
        return
    delay = _retry_delay(runtime, progress, retry)
    raise kopf.TemporaryError(f"{progress.readiness.reason}: {progress.readiness.message}", delay)


def _client_for(
    runtime: Runtime, namespace: str, deleting: bool
) -> Callable[[ConnectionRef], Awaitable[Any]]:
    async def client_for(connection: ConnectionRef) -> Any:
        return await runtime.connections.client_for(namespace, connection, allow_cached=deleting)

    return client_for


def _intent_recorder(runtime: Runtime, body: kopf.Body) -> Callable[[RolePair], Awaitable[None]]:
    """Before each add: the finalizer and the intent, in one write (skipped when both are there)."""

    async def record_intent(pair: RolePair) -> None:
        meta = body.meta
        finalizers = list(meta.get("finalizers") or [])
        has_finalizer = runtime.settings.finalizer in finalizers
        if has_finalizer and inventory.intent_from(meta.annotations) == pair:
            return
        if not has_finalizer:
            finalizers.append(runtime.settings.finalizer)
        try:
            await runtime.kube.claim_binding(
                meta.namespace or "",
                meta.name or "",
                str(meta.get("resourceVersion")),
                finalizers,
                {inventory.INTENT_ANNOTATION: inventory.intent_annotation(pair)},
            )
        except ApiException as exc:
            # 409: the object changed since this event; retry soon with the fresh version.
            # Nothing was added to Milvus yet, so nothing is lost either way.
            delay = 0.5 if exc.status == 409 else runtime.settings.retry_initial_seconds
            raise kopf.TemporaryError(f"recording the intent failed: {exc.reason}", delay) from exc

    return record_intent


def _timeout(spec: Mapping[str, Any]) -> float | None:
    return float(spec["timeoutSeconds"]) if spec.get("timeoutSeconds") else None


async def _policy_refusal(
    runtime: Runtime, live: LiveObjects, namespace: str, desired: RolePair
) -> status.Readiness | None:
    """Forbidden when the ClusterMilvusConnection's policy does not allow the desired pair.

    The policy and the namespace's labels come from the watch; a GET covers an object created
    a moment ago that the watch has not delivered yet.
    """
    ref = desired.connection
    if not ref.cluster_scoped:
        return None
    found = live.cluster_connection(ref.name)
    if found is not None:
        rules = found.policy
    else:
        obj = await runtime.kube.connection(namespace, ref)
        if obj is None:
            return None  # the add path reports ConnectionNotFound
        rules = policy.policy_from_spec(obj.get("spec") or {})
    labels = live.labels_of(namespace)
    if labels is None:
        labels = await runtime.kube.namespace_labels(namespace)
    refusal = policy.forbidden(
        rules, ref.name, namespace, labels, desired.username, desired.role_name
    )
    return None if refusal is None else status.refused(Reason.FORBIDDEN, refusal)


async def _claims(
    runtime: Runtime, live: LiveObjects, body: kopf.Body, applied: RolePair | None
) -> inventory.Claims:
    """What the binding claims (inventory.claims), its intent checked against the policy."""
    meta = body.meta
    intent = inventory.intent_from(meta.annotations)
    forbidden = False
    if intent is not None and intent != applied:
        refusal = await _policy_refusal(runtime, live, meta.namespace or "", intent)
        forbidden = refusal is not None
    provisional = inventory.provisional_intent(meta.annotations, body.status)
    return inventory.claims(applied, intent, forbidden, provisional)


async def reconcile_binding(
    runtime: Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    live: LiveObjects,
    drift_check: str = "",
) -> None:
    """Bring Milvus to the binding's spec; status says how it went; not-yet-done raises to retry.

    `drift_check` is the drift check's request, when it found this binding's grant missing.
    Otherwise a binding whose status says its very spec is granted gets no call: a resume after
    a restart (the connection's first drift check verifies them all with one listing), or the
    second of kopf's two handlers for the first update after a restart (it mixes the resume
    handler in, and runs the other one on the body the first one's status write made).
    """
    spec, current, meta = body.spec, body.status, body.meta
    namespace, generation = meta.namespace or "", int(meta.get("generation") or 0)
    desired = RolePair.from_spec(spec)
    applied = RolePair.from_status(current.get("applied"))
    # Refused before any call: a protected user, or a pair the connection's policy forbids.
    refused = reconcile.refusal(desired, runtime.settings.protected_users)
    if refused is None:
        refused = await _policy_refusal(runtime, live, namespace, desired)
    claims = await _claims(runtime, live, body, applied)
    ready = status.is_ready(current)
    observed = int(current.get("observedGeneration") or 0)
    # A connection deleted while the operator was down is noticed by reconciling.
    connection_known = live.endpoint_of(desired.connection.key(namespace)) is not None
    in_place = reconcile.already_in_place(desired, claims.pairs, ready, observed, generation)
    if not drift_check and refused is None and connection_known and in_place:
        metrics.RECONCILES.labels("reconcile", "InPlace").inc()
        return
    calls = reconcile.plan_reconcile(
        desired,
        claims.pairs,
        runtime.settings.protected_users,
        forbidden=bool(refused),
        provisional=claims.provisional,
    )
    progress = await reconcile.execute(
        calls,
        applied,
        _client_for(runtime, namespace, deleting=False),
        _timeout(spec),
        before_add=_intent_recorder(runtime, body),
        shared=_sharing(runtime, live, meta, retry),
    )
    _record(runtime, body, progress, logger, drift=bool(drift_check))
    last = progress.answers[-1] if progress.answers else None
    readiness = progress.readiness or refused
    if readiness is None and last is not None:
        if drift_check:
            readiness = status.drift_readiness(last, desired)
            metrics.DRIFT_CORRECTIONS.inc()
        else:
            readiness = status.readiness_from_answer(last, desired)
    if readiness is None:  # pragma: no cover - a plan that is not refused ends with the add
        return
    if refused is not None and progress.done:
        # Nothing to retry: a person changes the spec, or the platform the policy.
        _post_event(runtime, body, "Warning", str(refused.reason), refused.message)
        logger.info("%s: %s", refused.reason, refused.message)
    # With no call made (refused, or connection unusable), the previous resStatus stays.
    changes = status.binding_status(current, generation, readiness, progress.applied, last)
    if drift_check:
        changes["driftCheck"] = drift_check  # acted on: the next drift check may ask again
    patch.status.update(changes)
    metrics.RECONCILES.labels("reconcile", str(readiness.reason)).inc()
    _retry_or_done(runtime, progress, retry)


async def _release(
    runtime: Runtime, body: kopf.Body, retry: int, logger: logging.Logger, live: LiveObjects
) -> Progress:
    """RemoveUserFromRole for what the binding claimed, unless its deletionPolicy is Orphan."""
    spec, current, meta = body.spec, body.status, body.meta
    namespace = meta.namespace or ""
    applied = RolePair.from_status(current.get("applied"))
    claims = await _claims(runtime, live, body, applied)
    policy = str(spec.get("deletionPolicy") or "Delete")
    calls = reconcile.plan_release(
        claims.pairs, policy, runtime.settings.protected_users, claims.provisional
    )
    if not calls and claims.pairs:
        logger.info("leaving %s in Milvus (deletionPolicy %s)", claims.pairs[0], policy)
    elif not claims.pairs:  # released without a call: say so, a leaked grant would start here
        logger.info("nothing to remove: neither status.applied nor the intent names a grant")
    progress = await reconcile.execute(
        calls,
        applied,
        _client_for(runtime, namespace, deleting=True),
        _timeout(spec),
        shared=_sharing(runtime, live, meta, retry),
    )
    _record(runtime, body, progress, logger)
    result = "Released" if progress.readiness is None else str(progress.readiness.reason)
    metrics.RECONCILES.labels("finalize", result).inc()
    return progress


async def finalize_binding(
    runtime: Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
    live: LiveObjects,
) -> None:
    """Remove what the binding claimed (unless Orphan) before kopf releases the finalizer."""
    progress = await _release(runtime, body, retry, logger, live)
    if progress.readiness is None:
        return
    # Only what explains the held finalizer is written while the object is being deleted.
    held = status.refused(
        progress.readiness.reason,
        f"{progress.readiness.message}; deletion waits for the removal "
        "(set spec.deletionPolicy: Orphan to let go without it)",
    )
    current, generation = body.status, int(body.meta.get("generation") or 0)
    last = progress.answers[-1] if progress.answers else None
    patch.status.update(status.binding_status(current, generation, held, progress.applied, last))
    _retry_or_done(runtime, progress, retry)


# A binding deleted without its finalizer being honoured is released by this process alone, in
# the background of its watch event: past the waits for bindings about to add the same grant
# (reconcile.SHARED_GRANT_MAX_WAITS, after which the removal is made), then about an hour of
# attempts at the longest retry delay.
RELEASE_AFTER_DELETION_ATTEMPTS = reconcile.SHARED_GRANT_MAX_WAITS + 60


async def release_deleted_binding(
    runtime: Runtime, body: kopf.Body, logger: logging.Logger, live: LiveObjects
) -> None:
    """Remove what a binding claimed that Kubernetes deleted without waiting for its finalizer.

    A DELETE that read the object just before the operator's finalizer was added still removes
    it (the API server does not look at finalizers again), and the operator may have made its
    AddUserToRole by then. The watch's last copy of the object names what it claimed.
    """
    logger.warning(
        "deleted without its finalizer being honoured (a DELETE raced the finalizer's write); "
        "removing what it claimed"
    )
    last_problem = ""
    for retry in range(RELEASE_AFTER_DELETION_ATTEMPTS):
        progress = await _release(runtime, body, retry, logger, live)
        if progress.readiness is None:
            return
        last_problem = progress.readiness.message
        await asyncio.sleep(_retry_delay(runtime, progress, retry))
    logger.error("gave up removing what the deleted binding claimed: %s", last_problem)


def connection_of(body: kopf.Body) -> tuple[str, ConnectionRef]:
    """(namespace, reference) of a MilvusConnection or ClusterMilvusConnection body."""
    kind = CLUSTER_CONNECTION if body.get("kind") == CLUSTER_CONNECTION else "MilvusConnection"
    return body.meta.namespace or "", ConnectionRef(body.meta.name or "", kind)


def _state_key(namespace: str, ref: ConnectionRef) -> str:
    return f"{namespace}/{ref.name}" if namespace else f"{ref.kind}/{ref.name}"


async def check_connection(
    runtime: Runtime, body: kopf.Body, patch: kopf.Patch, logger: logging.Logger
) -> None:
    """Ready when Milvus is reachable and accepts the credentials; writes status only on change."""
    namespace, ref = connection_of(body)
    generation = int(body.meta.get("generation") or 0)
    secret_name = str((body.spec.get("credentialsSecretRef") or {}).get("name", ""))
    version = ""
    try:
        # Always read afresh: this check is what notices a changed connection or Secret.
        client = await runtime.connections.client_for(namespace, ref, fresh=True)
        answer, version = await client.get_server_version()
        readiness = status.connection_readiness(answer, version, secret_name)
    except UnusableConnectionError as problem:
        readiness = problem.readiness
    runtime.connection_states[_state_key(namespace, ref)] = str(readiness.reason)
    changes = status.connection_status(body.status, generation, readiness, version)
    if changes:
        patch.status.update(changes)
        kind = "Normal" if readiness.ready else "Warning"
        _post_event(runtime, body, kind, str(readiness.reason), readiness.message)
        logger.info("%s: %s", readiness.reason, readiness.message)


async def correct_drift(
    runtime: Runtime,
    body: kopf.Body,
    records: Iterable[BindingRecord],
    live: LiveObjects,
    logger: logging.Logger,
) -> None:
    """One SelectUser listing per connection; ask each binding whose grant it lacks to re-add it.

    The re-add is the binding's own reconcile (see inventory.DRIFT_ANNOTATION): a binding has
    one writer, so a re-add cannot land after the binding's deletion removed the grant.
    """
    # A grant the policy no longer allows is never re-added; its binding removes it instead.
    records = [r for r in records if r.ready and r.applied is not None and live.may_hold(r)]
    if not records:
        return
    namespace, ref = connection_of(body)
    try:
        client = await runtime.connections.client_for(namespace, ref)
    except UnusableConnectionError:
        return  # the connection's own status says why
    listing, granted = await client.list_grants()
    logger.info(
        "drift check: SelectUser listed %d users for %d bindings", len(granted), len(records)
    )
    if not listing.succeeded:
        logger.info("drift check skipped: %s", status.answer_summary(listing))
        return
    for record in inventory.drifted(records, granted):
        assert record.applied is not None
        request = utcnow().isoformat()
        try:
            await runtime.kube.annotate_binding(
                record.namespace, record.name, inventory.DRIFT_ANNOTATION, request
            )
        except ApiException as exc:  # deleted meanwhile: nothing to re-add
            logger.info("drift on %s: not requested: %s", record.ref, exc.reason)
            continue
        logger.info("drift: %s is missing in Milvus; %s re-adds it", record.applied, record.ref)


async def release_connection(
    runtime: Runtime, body: kopf.Body, users: Iterable[BindingRecord], retry: int
) -> None:
    """A connection goes only when no binding may still have a grant to remove through it.

    Bindings that only want it (nothing added yet) do not hold it: they turn ConnectionNotFound.
    """
    namespace, ref = connection_of(body)
    key = ref.key(namespace)
    waiting = sorted({r.ref for r in users if inventory.holds_through(r, key)})
    if waiting:
        shown = ", ".join(waiting[:5]) + (
            f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        )
        raise kopf.TemporaryError(
            f"still used by {len(waiting)} MilvusRoleBinding(s): {shown}",
            delay=min(runtime.settings.retry_max_seconds, 5 * (retry + 1)),
        )
    await runtime.connections.forget(key)
    runtime.connection_states.pop(_state_key(namespace, ref), None)


async def request_policy_checks(
    runtime: Runtime, records: Iterable[BindingRecord], live: LiveObjects, logger: logging.Logger
) -> None:
    """After a policy or namespace-label change: wake the bindings whose verdict changed.

    Only an annotation is written; each binding's own handler then adds or removes its grant,
    so a binding is never reconciled by two writers at once.
    """
    for record in records:
        desired = record.desired
        if record.deleting or desired is None or not desired.connection.cluster_scoped:
            continue
        found = live.cluster_connection(desired.connection.name)
        if found is None:
            continue
        labels = live.labels_of(record.namespace)
        digest = policy.verdict_digest(found.policy, labels)
        if not inventory.needs_policy_check(record, live.may_hold(record), digest):
            continue
        try:
            await runtime.kube.annotate_binding(
                record.namespace, record.name, inventory.RECONCILE_REQUEST_ANNOTATION, digest
            )
        except ApiException as exc:  # deleted meanwhile: nothing to check
            logger.info("policy check of %s not requested: %s", record.ref, exc.reason)
            continue
        logger.info("policy check requested for %s", record.ref)


def track_binding(runtime: Runtime, event_type: str | None, body: kopf.Body) -> None:
    """Keep the live view of one binding current (a watch event)."""
    if event_type == "DELETED":
        runtime.live.drop_binding(str(body.meta.uid))
        return
    meta = body.meta
    record = inventory.binding_record(
        meta.namespace or "", meta.name or "", meta, body.spec, body.status
    )
    runtime.live.put_binding(record)


def track_connection(runtime: Runtime, event_type: str | None, body: kopf.Body) -> None:
    """Keep the live view of one MilvusConnection or ClusterMilvusConnection current."""
    namespace, ref = connection_of(body)
    gone = event_type == "DELETED"
    if ref.cluster_scoped:
        if gone:
            runtime.live.cluster_connections.pop(ref.name, None)
        else:
            record = inventory.cluster_connection_record(body.spec)
            runtime.live.cluster_connections[ref.name] = record
    elif gone:
        runtime.live.connection_endpoints.pop(ref.key(namespace), None)
    else:
        runtime.live.connection_endpoints[ref.key(namespace)] = inventory.endpoint_key(body.spec)


def track_namespace(runtime: Runtime, event_type: str | None, body: kopf.Body) -> None:
    name = str(body.meta.name)
    if event_type == "DELETED":
        runtime.live.namespace_labels.pop(name, None)
    else:
        runtime.live.namespace_labels[name] = dict(body.meta.labels)


async def load_live_objects(runtime: Runtime, logger: logging.Logger) -> None:
    """One LIST per kind before any handler runs, so that the first decisions see everything."""
    namespaces = runtime.settings.namespaces
    kinds: list[tuple[str, str, tuple[str, ...], Callable[[Runtime, str | None, kopf.Body], None]]]
    kinds = [
        ("namespaces", "namespaces", (), track_namespace),
        ("connections", CONNECTIONS, namespaces, track_connection),
        ("cluster connections", CLUSTER_CONNECTIONS, (), track_connection),
        ("bindings", BINDINGS, namespaces, track_binding),
    ]
    listed = dict.fromkeys((kind for kind, *_ in kinds), 0)
    for kind, plural, scope, track in kinds:
        async for page in runtime.kube.list_pages(plural, scope):
            for body in page:
                track(runtime, None, body)
            listed[kind] += len(page)
    logger.info("listed %s", ", ".join(f"{n} {kind}" for kind, n in listed.items()))
