"""kopf handlers only: each gathers its inputs and hands off to the controller."""

from __future__ import annotations

from typing import Any

import kopf

from milvus_rbac_operator import controller, inventory, kubeclient, metrics
from milvus_rbac_operator.connections import (
    BINDINGS,
    CLUSTER_CONNECTIONS,
    CONNECTIONS,
    GROUP,
    VERSION,
)
from milvus_rbac_operator.controller import Runtime
from milvus_rbac_operator.inventory import BindingRecord
from milvus_rbac_operator.settings import Settings

# Expected failures raise kopf.TemporaryError with their own delay; anything unexpected (an API
# hiccup, say) is retried after this many seconds instead of kopf's default minute.
UNEXPECTED_ERROR_BACKOFF = 5.0
# How soon after start each connection's first drift check runs.
FIRST_DRIFT_CHECK_SECONDS = 15.0
# At exit, how long Events still queued may take to go out.
EVENT_FLUSH_SECONDS = 2.0


def build_registry(settings: Settings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(memo: Any, **_: Any) -> kopf.AiohttpSession:
        runtime = _runtime(memo)
        configuration = kubeclient.load_configuration(runtime.kubeconfig)
        info = kubeclient.connection_info(configuration, settings.operator_namespace)
        needed = kubeclient.api_connections_needed(settings.namespaces)
        return kubeclient.bounded_session(info, needed)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        runtime = _runtime(memo)
        await runtime.events.close(EVENT_FLUSH_SECONDS)
        await runtime.connections.close()
        await runtime.kube.close()

    # The live view of bindings, connections and namespace labels (inventory.LiveObjects): one
    # LIST per kind before the watches start, then every watch event. kopf's own indexes would
    # do the same but hold start-up for minutes at thousands of bindings.
    @kopf.on.startup(registry=registry)
    async def load_live_objects(memo: Any, logger: Any, **_: Any) -> None:
        runtime = _runtime(memo)
        await controller.load_live_objects(runtime, logger)
        metrics.BINDINGS.follow(runtime.live.readiness_counts)

    # Coroutines, not functions: kopf runs a plain function in a thread, and these run for every
    # watch event (three per created binding).
    @kopf.on.event(GROUP, VERSION, BINDINGS, registry=registry)
    async def track_binding(
        type: str | None, body: kopf.Body, memo: Any, logger: Any, **_: Any
    ) -> None:
        runtime = _runtime(memo)
        controller.track_binding(runtime, type, body)
        if type == "DELETED" and inventory.deleted_unreleased(body.meta, settings.finalizer):
            await controller.release_deleted_binding(runtime, body, logger, runtime.live)

    for plural in (CONNECTIONS, CLUSTER_CONNECTIONS):
        kopf.on.event(GROUP, VERSION, plural, id="track_connection", registry=registry)(
            track_connection
        )

    @kopf.on.event("v1", "namespaces", registry=registry)
    async def track_namespace(
        type: str | None,
        body: kopf.Body,
        name: str,
        memo: Any,
        logger: Any,
        **_: Any,
    ) -> None:
        runtime = _runtime(memo)
        controller.track_namespace(runtime, type, body)
        # Namespace labels feed allowedNamespaces selectors: re-check that namespace's bindings.
        users = runtime.live.cluster_bindings_in(name)
        if users:
            await controller.request_policy_checks(runtime, users, runtime.live, logger)

    # A binding needs its finalizer once it may hold a grant (inventory.may_hold_grant). The
    # admission policy (deploy/admission) gives a new binding the finalizer and the intent;
    # without it the operator writes both right before the first AddUserToRole, in one write.
    # kopf then sees the finalizer as required and present, and removes it after `finalize`.
    def may_hold_grant(meta: kopf.Meta, status: kopf.Status, **_: Any) -> bool:
        return inventory.may_hold_grant(meta, status, settings.finalizer)

    kopf.on.resume(
        GROUP,
        VERSION,
        BINDINGS,
        id="reconcile",
        registry=registry,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )(reconcile_binding)
    kopf.on.create(
        GROUP,
        VERSION,
        BINDINGS,
        id="reconcile",
        registry=registry,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )(reconcile_binding)
    kopf.on.update(
        GROUP,
        VERSION,
        BINDINGS,
        id="reconcile",
        field="spec",
        registry=registry,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )(reconcile_binding)
    # The operator asks for this one when a policy or a namespace's labels changed the verdict.
    kopf.on.update(
        GROUP,
        VERSION,
        BINDINGS,
        id="policy-check",
        field=("metadata", "annotations", inventory.RECONCILE_REQUEST_ANNOTATION),
        registry=registry,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )(reconcile_binding)

    # A connection's drift check asks for this one when the binding's grant is missing.
    kopf.on.update(
        GROUP,
        VERSION,
        BINDINGS,
        id="drift-check",
        field=("metadata", "annotations", inventory.DRIFT_ANNOTATION),
        registry=registry,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )(re_add_drifted_grant)

    kopf.on.delete(
        GROUP,
        VERSION,
        BINDINGS,
        id="finalize",
        registry=registry,
        when=may_hold_grant,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )(finalize_binding)

    for plural in (CONNECTIONS, CLUSTER_CONNECTIONS):
        for register in (kopf.on.resume, kopf.on.create):
            register(GROUP, VERSION, plural, id="check", registry=registry)(check_connection)
        kopf.on.update(GROUP, VERSION, plural, id="check", field="spec", registry=registry)(
            check_connection
        )
        kopf.timer(
            GROUP,
            VERSION,
            plural,
            id="recheck",
            registry=registry,
            interval=settings.connection_check_seconds,
        )(check_connection)
        kopf.timer(
            GROUP,
            VERSION,
            plural,
            id="drift",
            registry=registry,
            interval=settings.drift_interval_seconds,
            # Soon after start: this listing is what verifies the grants a resume trusted.
            initial_delay=min(settings.drift_interval_seconds, FIRST_DRIFT_CHECK_SECONDS),
        )(correct_drift)
        # Held while any binding still needs this connection to add or remove its grant.
        kopf.on.delete(GROUP, VERSION, plural, id="release", registry=registry)(release_connection)

    kopf.on.update(
        GROUP,
        VERSION,
        CLUSTER_CONNECTIONS,
        id="policy",
        field="spec.policy",
        registry=registry,
    )(check_policy_of_connection)

    return registry


@kubeclient.temporary_on_api_outage
async def reconcile_binding(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **kwargs: Any
) -> None:
    await controller.reconcile_binding(
        _runtime(memo), body, patch, retry, logger, _runtime(memo).live
    )


@kubeclient.temporary_on_api_outage
async def re_add_drifted_grant(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **kwargs: Any
) -> None:
    request = str(body.meta.annotations.get(inventory.DRIFT_ANNOTATION) or "")
    await controller.reconcile_binding(
        _runtime(memo), body, patch, retry, logger, _runtime(memo).live, drift_check=request
    )


@kubeclient.temporary_on_api_outage
async def finalize_binding(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **kwargs: Any
) -> None:
    await controller.finalize_binding(
        _runtime(memo), body, patch, retry, logger, _runtime(memo).live
    )


@kubeclient.temporary_on_api_outage
async def check_connection(
    body: kopf.Body, patch: kopf.Patch, logger: Any, memo: Any, **_: Any
) -> None:
    await controller.check_connection(_runtime(memo), body, patch, logger)


@kubeclient.temporary_on_api_outage
async def correct_drift(body: kopf.Body, logger: Any, memo: Any, **kwargs: Any) -> None:
    live = _runtime(memo).live
    users = _users_of(body, memo)
    await controller.correct_drift(_runtime(memo), body, users, live, logger)
    # Also the slow net under namespace-label and policy changes.
    await controller.request_policy_checks(_runtime(memo), users, live, logger)


@kubeclient.temporary_on_api_outage
async def release_connection(body: kopf.Body, retry: int, memo: Any, **kwargs: Any) -> None:
    await controller.release_connection(_runtime(memo), body, _users_of(body, memo), retry)


@kubeclient.temporary_on_api_outage
async def check_policy_of_connection(
    body: kopf.Body, logger: Any, memo: Any, **kwargs: Any
) -> None:
    users = _users_of(body, memo)
    await controller.request_policy_checks(_runtime(memo), users, _runtime(memo).live, logger)


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime


async def track_connection(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    controller.track_connection(_runtime(memo), type, body)


def _users_of(body: kopf.Body, memo: Any) -> list[BindingRecord]:
    """Bindings that use the connection `body`."""
    namespace, ref = controller.connection_of(body)
    return _runtime(memo).live.users_of(ref.key(namespace))
