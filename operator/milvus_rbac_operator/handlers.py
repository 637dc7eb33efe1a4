"""kopf handlers only: each gathers its inputs and hands off to the controller."""

from __future__ import annotations

import logging
import socket
from typing import Any

import kopf

from milvus_rbac_operator import controller, kubeclient
from milvus_rbac_operator.connections import BINDINGS, CONNECTIONS, GROUP, VERSION
from milvus_rbac_operator.controller import Runtime
from milvus_rbac_operator.settings import Settings


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

    @kopf.on.resume(GROUP, VERSION, BINDINGS, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, BINDINGS, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, BINDINGS, id="reconcile", field="spec", registry=registry)
    async def reconcile_binding(
        body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **_: Any
    ) -> None:
        await controller.reconcile_binding(_runtime(memo), body, patch, retry, logger)

    @kopf.on.delete(GROUP, VERSION, BINDINGS, id="finalize", registry=registry)
    async def finalize_binding(
        body: kopf.Body, patch: kopf.Patch, retry: int, logger: Any, memo: Any, **_: Any
    ) -> None:
        await controller.finalize_binding(_runtime(memo), body, patch, retry, logger)

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
        idle=None,
    )
    async def check_connection(
        body: kopf.Body, patch: kopf.Patch, logger: Any, memo: Any, **_: Any
    ) -> None:
        await controller.check_connection(_runtime(memo), body, patch, logger)

    @kopf.on.delete(GROUP, VERSION, CONNECTIONS, id="forget", optional=True, registry=registry)
    async def forget_connection(body: kopf.Body, memo: Any, **_: Any) -> None:
        await controller.forget_connection(_runtime(memo), body)

    return registry


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime
