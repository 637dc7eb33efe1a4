"""kopf handlers only: each gathers its inputs and hands off to the controller."""

from __future__ import annotations

from typing import Any

import kopf

from milvus_rbac_operator import controller, inventory, kubeclient, metrics, policy
from milvus_rbac_operator.connections import (
    BINDINGS,
    CLUSTER_CONNECTIONS,
    CONNECTIONS,
    GROUP,
    VERSION,
)
from milvus_rbac_operator.controller import ClusterConnectionRecord, Runtime
from milvus_rbac_operator.inventory import BindingRecord
from milvus_rbac_operator.model import ConnectionKey
from milvus_rbac_operator.settings import Settings

# Expected failures raise kopf.TemporaryError with their own delay; anything unexpected (an API
# hiccup, say) is retried after this many seconds instead of kopf's default minute.
UNEXPECTED_ERROR_BACKOFF = 5.0


def build_registry(settings: Settings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
        return kubeclient.connection_info(kubeclient.load_configuration(_runtime(memo).kubeconfig))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        await memo.runtime.connections.close()

    # Indexes over the live objects: who wants which pair, who uses which connection, where each
    # connection points and what it allows, which labels each namespace has. Rebuilt from the
    # watch after every restart.
    @kopf.index(GROUP, VERSION, BINDINGS, id="bindings_by_pair", registry=registry)
    def bindings_by_pair(**kwargs: Any) -> dict[tuple[str, str], BindingRecord]:
        record = _binding_record(kwargs)
        return dict.fromkeys(inventory.pair_keys(record), record)

    @kopf.index(GROUP, VERSION, BINDINGS, id="bindings_by_connection", registry=registry)
    def bindings_by_connection(**kwargs: Any) -> dict[ConnectionKey, BindingRecord]:
        record = _binding_record(kwargs)
        intent = inventory.intent_from(kwargs["meta"].get("annotations"))
        return dict.fromkeys(inventory.connections_used(record, intent), record)

    @kopf.index(GROUP, VERSION, BINDINGS, id="bindings_by_readiness", registry=registry)
    def bindings_by_readiness(status: kopf.Status, **_: Any) -> dict[str, bool]:
        return {inventory.readiness_label(status): True}

    @kopf.index(GROUP, VERSION, BINDINGS, id="cluster_bindings_by_namespace", registry=registry)
    def cluster_bindings_by_namespace(**kwargs: Any) -> dict[str, BindingRecord]:
        record = _binding_record(kwargs)
        if record.desired is None or not record.desired.connection.cluster_scoped:
            return {}
        return {record.namespace: record}

    @kopf.index(GROUP, VERSION, CONNECTIONS, id="connection_endpoints", registry=registry)
    def connection_endpoints(
        namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[ConnectionKey, str]:
        return {(namespace or "", name): inventory.endpoint_key(spec)}

    @kopf.index(GROUP, VERSION, CLUSTER_CONNECTIONS, id="cluster_connections", registry=registry)
    def cluster_connections(name: str, spec: kopf.Spec, **_: Any) -> dict[str, Any]:
        record = ClusterConnectionRecord(
            inventory.endpoint_key(spec), policy.policy_from_spec(spec)
        )
        return {name: record}

    @kopf.index("v1", "namespaces", id="namespace_labels", registry=registry)
    def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
        return {name: dict(labels)}

    # A binding needs its finalizer once it has an intent (something to remove later). The
    # operator writes both together right before the first AddUserToRole, in one write; kopf
    # then sees the finalizer as required and present, and removes it after `finalize`.
    for register in (kopf.on.resume, kopf.on.create):
        register(
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
        annotations={inventory.INTENT_ANNOTATION: kopf.PRESENT},
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
            initial_delay=settings.drift_interval_seconds,
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

    # Namespace labels feed allowedNamespaces selectors. An event handler keeps no state and
    # writes nothing to the namespace.
    kopf.on.event("v1", "namespaces", registry=registry)(check_policy_in_namespace)

    return registry


async def reconcile_binding(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **kwargs: Any
) -> None:
    await controller.reconcile_binding(
        _runtime(memo), body, patch, retry, logger, _inventory(kwargs)
    )


async def re_add_drifted_grant(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **kwargs: Any
) -> None:
    request = str(body.meta.annotations.get(inventory.DRIFT_ANNOTATION) or "")
    await controller.reconcile_binding(
        _runtime(memo), body, patch, retry, logger, _inventory(kwargs), drift_check=request
    )


async def finalize_binding(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **kwargs: Any
) -> None:
    await controller.finalize_binding(
        _runtime(memo), body, patch, retry, logger, _inventory(kwargs)
    )


async def check_connection(
    body: kopf.Body, patch: kopf.Patch, logger: Any, memo: Any, **_: Any
) -> None:
    await controller.check_connection(_runtime(memo), body, patch, logger)


async def correct_drift(body: kopf.Body, logger: Any, memo: Any, **kwargs: Any) -> None:
    live = _inventory(kwargs)
    users = _users_of(body, kwargs)
    await controller.correct_drift(_runtime(memo), body, users, live, logger)
    # Also the slow net under namespace-label and policy changes.
    await controller.request_policy_checks(_runtime(memo), users, live, logger)


async def release_connection(body: kopf.Body, retry: int, memo: Any, **kwargs: Any) -> None:
    await controller.release_connection(_runtime(memo), body, _users_of(body, kwargs), retry)


async def check_policy_of_connection(
    body: kopf.Body, logger: Any, memo: Any, **kwargs: Any
) -> None:
    users = _users_of(body, kwargs)
    await controller.request_policy_checks(_runtime(memo), users, _inventory(kwargs), logger)


async def check_policy_in_namespace(name: str, logger: Any, memo: Any, **kwargs: Any) -> None:
    users = list(kwargs["cluster_bindings_by_namespace"].get(name, []))
    if users:
        await controller.request_policy_checks(_runtime(memo), users, _inventory(kwargs), logger)


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def _binding_record(kwargs: dict[str, Any]) -> BindingRecord:
    return inventory.binding_record(
        kwargs["namespace"] or "", kwargs["name"], kwargs["meta"], kwargs["spec"], kwargs["status"]
    )


def _inventory(kwargs: dict[str, Any]) -> controller.Inventory:
    metrics.BINDINGS.follow(kwargs["bindings_by_readiness"])  # the same live view every time
    return controller.Inventory(
        kwargs["bindings_by_pair"],
        kwargs["connection_endpoints"],
        kwargs["cluster_connections"],
        kwargs["namespace_labels"],
    )


def _users_of(body: kopf.Body, kwargs: dict[str, Any]) -> list[BindingRecord]:
    """Bindings that use the connection `body` (index `bindings_by_connection`)."""
    namespace, ref = controller.connection_of(body)
    return list(kwargs["bindings_by_connection"].get(ref.key(namespace), []))
