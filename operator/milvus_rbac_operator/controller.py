"""The shell between kopf and the core: gather inputs, run the plan, write status and Events."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import kopf

from milvus_rbac_operator import reconcile, status
from milvus_rbac_operator.connections import ConnectionRegistry
from milvus_rbac_operator.model import ResStatus, RolePair
from milvus_rbac_operator.reconcile import Progress, UnusableConnectionError
from milvus_rbac_operator.settings import Settings


@dataclass
class Runtime:
    """What every handler needs; lives in kopf's memo for the operator's lifetime."""

    settings: Settings
    connections: ConnectionRegistry
    kubeconfig: str | None = None


def _record(body: kopf.Body, answers: list[ResStatus], logger: logging.Logger) -> None:
    for answer in answers:
        event = status.event_for(answer)
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        logger.info("%s", event.message)


def _retry_or_done(runtime: Runtime, progress: Progress, retry: int) -> None:
    if progress.done or progress.readiness is None:
        return
    settings = runtime.settings
    delay = reconcile.retry_delay(
        progress.outcome,
        retry,
        settings.retry_initial_seconds,
        settings.retry_max_seconds,
        settings.not_found_retry_seconds,
    )
    raise kopf.TemporaryError(f"{progress.readiness.reason}: {progress.readiness.message}", delay)


def _client_for(runtime: Runtime, namespace: str) -> Any:
    async def client_for(connection: str) -> Any:
        return await runtime.connections.client_for(namespace, connection)

    return client_for


async def reconcile_binding(
    runtime: Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
) -> None:
    """Bring Milvus to the binding's spec; status says how it went; not-yet-done raises to retry."""
    spec, current = body.spec, body.status
    generation = int(body.meta.get("generation") or 0)
    desired = RolePair.from_spec(spec)
    applied = RolePair.from_status(current.get("applied"))
    refused = reconcile.refusal(desired, runtime.settings.protected_users)
    if refused is not None:
        # Nothing reaches Milvus; a person has to change the spec.
        patch.status.update(status.binding_status(current, generation, refused, applied, None))
        kopf.event(body, type="Warning", reason=str(refused.reason), message=refused.message)
        return
    calls = reconcile.plan_reconcile(desired, applied, runtime.settings.protected_users)
    timeout = float(spec["timeoutSeconds"]) if spec.get("timeoutSeconds") else None
    progress = await reconcile.execute(
        calls, applied, _client_for(runtime, body.meta.namespace or ""), timeout
    )
    _record(body, progress.answers, logger)
    last = progress.answers[-1] if progress.answers else None
    readiness = progress.readiness
    if readiness is None and last is not None:
        readiness = status.readiness_from_answer(last, desired)
    if readiness is None:  # pragma: no cover - a plan always ends with the add
        return
    # With no call made (connection unusable), the previous resStatus stays as it was.
    patch.status.update(
        status.binding_status(current, generation, readiness, progress.applied, last)
    )
    _retry_or_done(runtime, progress, retry)


async def finalize_binding(
    runtime: Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: logging.Logger,
) -> None:
    """Remove the applied pair (unless Orphan) before kopf releases the finalizer."""
    spec, current = body.spec, body.status
    applied = RolePair.from_status(current.get("applied"))
    policy = str(spec.get("deletionPolicy") or "Delete")
    calls = reconcile.plan_release(applied, policy, runtime.settings.protected_users)
    if not calls:
        if applied is not None:
            logger.info("leaving %s in Milvus (deletionPolicy %s)", applied, policy)
        return
    timeout = float(spec["timeoutSeconds"]) if spec.get("timeoutSeconds") else None
    progress = await reconcile.execute(
        calls, applied, _client_for(runtime, body.meta.namespace or ""), timeout
    )
    _record(body, progress.answers, logger)
    if progress.done:
        return
    # Only what explains the held finalizer is written while the object is being deleted.
    assert progress.readiness is not None
    held = status.refused(
        progress.readiness.reason,
        f"{progress.readiness.message}; deletion waits for the removal "
        "(set spec.deletionPolicy: Orphan to let go without it)",
    )
    generation = int(body.meta.get("generation") or 0)
    last = progress.answers[-1] if progress.answers else None
    patch.status.update(status.binding_status(current, generation, held, applied, last))
    _retry_or_done(runtime, progress, retry)


async def check_connection(
    runtime: Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    logger: logging.Logger,
) -> None:
    """Ready when Milvus is reachable and accepts the credentials; writes status only on change."""
    namespace, name = body.meta.namespace or "", body.meta.name or ""
    generation = int(body.meta.get("generation") or 0)
    secret_name = str((body.spec.get("credentialsSecretRef") or {}).get("name", ""))
    version = ""
    try:
        client = await runtime.connections.client_for(namespace, name)
        answer, version = await client.get_server_version()
        readiness = status.connection_readiness(answer, version, secret_name)
    except UnusableConnectionError as problem:
        readiness = problem.readiness
    changes = status.connection_status(body.status, generation, readiness, version)
    if changes:
        patch.status.update(changes)
        kind = "Normal" if readiness.ready else "Warning"
        kopf.event(body, type=kind, reason=str(readiness.reason), message=readiness.message)
        logger.info("%s: %s", readiness.reason, readiness.message)


async def forget_connection(runtime: Runtime, body: kopf.Body) -> None:
    await runtime.connections.forget(body.meta.namespace or "", body.meta.name or "")
