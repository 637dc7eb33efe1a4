"""kopf handlers only: each gathers its inputs and hands off to the controller."""

from __future__ import annotations

import logging
import socket
from typing import Any

import kopf

from milvus_rbac_operator import controller, inventory, kubeclient
from milvus_rbac_operator.connections import BINDINGS, CONNECTIONS, GROUP, VERSION
from milvus_rbac_operator.controller import Runtime
from milvus_rbac_operator.inventory import BindingRecord
from milvus_rbac_operator.settings import Settings

# Expected failures raise kopf.TemporaryError with their own delay; anything unexpected (an API
# hiccup, say) is retried after this many seconds instead of kopf's default minute.
UNEXPECTED_ERROR_BACKOFF = 5.0


def kopf_settings_for(settings: Settings) -> kopf.OperatorSettings:
    """kopf's knobs, chosen deliberately (see README, Operating)."""
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.persistence.finalizer = settings.finalizer
    # Progress and the last-handled spec live in status.kopf, not in annotations: one status
    # write carries the outcome and kopf's bookkeeping together.
    kopf_settings.persistence.progress_storage = kopf.StatusProgressStorage(
        field="status.kopf.progress"
    )
    kopf_settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.kopf.lastHandledConfiguration"
    )
    # Only the Events we record on purpose (one per Milvus call), not kopf's log lines.
    kopf_settings.posting.loggers = False
    kopf_settings.posting.level = logging.INFO
    kopf_settings.posting.reporting_component = "milvus-rbac-operator"
    kopf_settings.posting.reporting_instance = socket.gethostname()
    # Reconnect quickly when the API server restarts or drops the watch.
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.connect_timeout = 10
    kopf_settings.networking.error_backoffs = [1, 2, 4, 8]
    return kopf_settings


def build_registry(settings: Settings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
        return kubeclient.connection_info(kubeclient.load_configuration(_runtime(memo).kubeconfig))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        await memo.runtime.connections.close()

    # Indexes over the live objects: who wants which pair, who uses which connection, where each
    # connection points. Rebuilt from the watch after every restart.
    @kopf.index(GROUP, VERSION, BINDINGS, id="bindings_by_pair", registry=registry)
    def bindings_by_pair(**kwargs: Any) -> dict[tuple[str, str], BindingRecord]:
        record = _binding_record(kwargs)
        return dict.fromkeys(inventory.pair_keys(record), record)

    @kopf.index(GROUP, VERSION, BINDINGS, id="bindings_by_connection", registry=registry)
    def bindings_by_connection(**kwargs: Any) -> dict[tuple[str, str], BindingRecord]:
        record = _binding_record(kwargs)
        intent = inventory.intent_from(kwargs["meta"].get("annotations"))
        return dict.fromkeys(inventory.connections_used(record, intent), record)

    @kopf.index(GROUP, VERSION, CONNECTIONS, id="connection_endpoints", registry=registry)
    def connection_endpoints(
        namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[tuple[str | None, str], str]:
        return {(namespace, name): inventory.endpoint_key(spec)}

    # A binding needs its finalizer once it has an intent (something to remove later). The
    # operator writes both together right before the first AddUserToRole, in one write; kopf
    # then sees the finalizer as required and present, and removes it after `finalize`.
    @kopf.on.resume(
        GROUP,
        VERSION,
        BINDINGS,
        id="reconcile",
        registry=registry,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )
    @kopf.on.create(
        GROUP,
        VERSION,
        BINDINGS,
        id="reconcile",
        registry=registry,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )
    @kopf.on.update(
        GROUP,
        VERSION,
        BINDINGS,
        id="reconcile",
        field="spec",
        registry=registry,
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )
    async def reconcile_binding(
        body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **kwargs: Any
    ) -> None:
        await controller.reconcile_binding(
            _runtime(memo), body, patch, retry, logger, _inventory(kwargs)
        )

    @kopf.on.delete(
        GROUP,
        VERSION,
        BINDINGS,
        id="finalize",
        registry=registry,
        annotations={inventory.INTENT_ANNOTATION: kopf.PRESENT},
        backoff=UNEXPECTED_ERROR_BACKOFF,
    )
    async def finalize_binding(
        body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **kwargs: Any
    ) -> None:
        await controller.finalize_binding(
            _runtime(memo), body, patch, retry, logger, _inventory(kwargs)
        )

    @kopf.on.resume(GROUP, VERSION, CONNECTIONS, id="check", registry=registry)
    @kopf.on.create(GROUP, VERSION, CONNECTIONS, id="check", registry=registry)
    @kopf.on.update(GROUP, VERSION, CONNECTIONS, id="check", field="spec", registry=registry)
    @kopf.timer(
        GROUP,
        VERSION,
        CONNECTIONS,
        id="recheck",
        registry=registry,
        interval=settings.connection_check_seconds,
    )
    async def check_connection(
        body: kopf.Body, patch: kopf.Patch, logger: Any, memo: Any, **_: Any
    ) -> None:
        await controller.check_connection(_runtime(memo), body, patch, logger)

    @kopf.timer(
        GROUP,
        VERSION,
        CONNECTIONS,
        id="drift",
        registry=registry,
        interval=settings.drift_interval_seconds,
        initial_delay=settings.drift_interval_seconds,
    )
    async def correct_drift(body: kopf.Body, logger: Any, memo: Any, **kwargs: Any) -> None:
        await controller.correct_drift(_runtime(memo), body, _users_of(body, kwargs), logger)

    # Held while any binding still needs this connection to add or remove its grant.
    @kopf.on.delete(GROUP, VERSION, CONNECTIONS, id="release", registry=registry)
    async def release_connection(body: kopf.Body, retry: int, memo: Any, **kwargs: Any) -> None:
        await controller.release_connection(_runtime(memo), body, _users_of(body, kwargs), retry)

    return registry


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def _binding_record(kwargs: dict[str, Any]) -> BindingRecord:
    return inventory.binding_record(
        kwargs["namespace"] or "", kwargs["name"], kwargs["meta"], kwargs["spec"], kwargs["status"]
    )


def _inventory(kwargs: dict[str, Any]) -> controller.Inventory:
    return controller.Inventory(kwargs["bindings_by_pair"], kwargs["connection_endpoints"])


def _users_of(body: kopf.Body, kwargs: dict[str, Any]) -> list[BindingRecord]:
    """Bindings that use the connection `body` (index `bindings_by_connection`)."""
    index = kwargs["bindings_by_connection"]
    return list(index.get((body.meta.namespace, body.meta.name), []))
