"""Objects as the operator leaves them, built by its own status code, for the GitOps health tests.

Each case says what Argo CD (deploy/argocd/health.lua) and kstatus (Flux) should make of it, so
both tests follow status.py: a reason added to NEEDS_A_PERSON is covered here without an edit.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from milvus_rbac_operator import reconcile, status
from milvus_rbac_operator.model import (
    CLUSTER_CONNECTION,
    NAMESPACED_CONNECTION,
    ConnectionRef,
    Operation,
    Outcome,
    ResStatus,
    RolePair,
)
from milvus_rbac_operator.status import Readiness, Reason

PAIR = RolePair(ConnectionRef("milvus"), "alice", "reader")
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
DELETED_AT = "2026-01-01T00:10:00Z"
# The Ready reasons of success; every other reason is a failure of some kind.
SUCCESS_REASONS = frozenset({Reason.GRANTED, Reason.DRIFT_CORRECTED, Reason.CONNECTED})
TRANSIENT_REASONS = sorted(set(Reason) - status.NEEDS_A_PERSON - SUCCESS_REASONS)


def answer(outcome: Outcome, operation: Operation = Operation.ADD_USER_TO_ROLE) -> ResStatus:
    ok = outcome is Outcome.SUCCESS
    who = ("", "") if operation is Operation.GET_VERSION else ("alice", "reader")
    return ResStatus(
        operation,
        *who,
        0 if ok else 65535,
        "Success" if ok else "UnexpectedError",
        "" if ok else f"milvus says: {outcome.value}",
        outcome,
        T0,
    )


def _object(kind: str, generation: int, state: dict[str, Any] | None, deleting: bool) -> Any:
    metadata: dict[str, Any] = {
        "name": "alice-reader" if kind == "MilvusRoleBinding" else "milvus",
        "uid": "6f1c1c7e-5d0e-4a57-9d0e-8f1f3c2a0b11",
        "generation": generation,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if kind != CLUSTER_CONNECTION:
        metadata["namespace"] = "team-a"
    if deleting:
        metadata["deletionTimestamp"] = DELETED_AT
        metadata["finalizers"] = ["rbac.milvus.io/finalizer"]
    obj: dict[str, Any] = {
        "apiVersion": "rbac.milvus.io/v1alpha1",
        "kind": kind,
        "metadata": metadata,
        "spec": {"connectionRef": {"name": "milvus"}, "username": "alice", "roleName": "reader"},
    }
    if state is not None:
        obj["status"] = state
    # Through JSON, as the API server hands it to Argo CD and Flux.
    return json.loads(json.dumps(obj))


def binding(
    state: dict[str, Any] | None = None, generation: int = 1, deleting: bool = False
) -> Any:
    return _object("MilvusRoleBinding", generation, state, deleting)


def connection(
    state: dict[str, Any] | None = None, generation: int = 1, kind: str = NAMESPACED_CONNECTION
) -> Any:
    return _object(kind, generation, state, False)


def after(readiness: Readiness, current: Any = None, generation: int = 1) -> dict[str, Any]:
    """The binding status after one reconcile that ended in `readiness`."""
    applied = PAIR if readiness.ready else None
    return status.binding_status(current or {}, generation, readiness, applied, None)


GRANTED = status.readiness_from_answer(answer(Outcome.SUCCESS), PAIR)
READY = status.binding_status({}, 1, GRANTED, PAIR, answer(Outcome.SUCCESS))


def explained(readiness: Readiness) -> str:
    return f"{readiness.reason}: {readiness.message}"


@dataclass(frozen=True)
class Case:
    id: str
    obj: Any
    argo: str  # Argo CD health status
    argo_message: str
    kstatus: str  # kstatus status
    kstatus_message: str | None = None  # checked when set


def _cases() -> list[Case]:
    cases: list[Case] = [
        Case("ready", binding(READY), "Healthy", GRANTED.message, "Current", "Resource is Ready"),
    ]
    drift = status.drift_readiness(answer(Outcome.SUCCESS), PAIR)
    cases.append(
        Case("drift-corrected", binding(after(drift, READY)), "Healthy", drift.message, "Current")
    )
    # Progressing: nothing written yet, a failure being retried, a spec not yet looked at.
    cases.append(
        Case(
            "new-without-status",
            binding(),
            "Progressing",
            "waiting for the operator to reconcile",
            # kstatus cannot tell "no status yet" from "needs none": see test_kstatus.py.
            "Current",
            "Resource is current",
        )
    )
    for reason in TRANSIENT_REASONS:
        failed = status.refused(reason, f"{reason} while adding {PAIR}; retrying with backoff")
        cases.append(
            Case(
                f"transient-{reason}",
                binding(after(failed)),
                "Progressing",
                explained(failed),
                "InProgress",
                failed.message,
            )
        )
    for outcome in (Outcome.UNAVAILABLE, Outcome.TIMEOUT, Outcome.RATE_LIMITED, Outcome.FAILED):
        failed = status.readiness_from_answer(answer(outcome), PAIR)
        cases.append(
            Case(
                f"transient-after-ready-{outcome.name.lower()}",
                binding(after(failed, READY)),
                "Progressing",
                explained(failed),
                "InProgress",
                failed.message,
            )
        )
    cases.append(
        Case(
            "stale-generation-of-ready",
            binding(READY, generation=2),
            "Progressing",
            "generation 2 not reconciled yet (observed 1)",
            "InProgress",
            "MilvusRoleBinding generation is 2, but latest observed generation is 1",
        )
    )
    user_gone = status.readiness_from_answer(answer(Outcome.USER_NOT_FOUND), PAIR)
    cases.append(
        # Someone fixed the spec of a stalled binding; the operator has not looked yet.
        Case(
            "stale-generation-of-stalled",
            binding(after(user_gone), generation=2),
            "Progressing",
            "generation 2 not reconciled yet (observed 1)",
            "InProgress",
        )
    )
    # An operator from before Reconciling/Stalled wrote Ready alone: still only Progressing.
    old = status.merge_condition([], user_gone, 1)
    cases.append(
        Case(
            "ready-false-alone",
            binding({"observedGeneration": 1, "conditions": old}),
            "Progressing",
            explained(user_gone),
            "InProgress",
            user_gone.message,
        )
    )
    # Degraded / Failed: only a person can fix it.
    for reason in sorted(status.NEEDS_A_PERSON):
        stuck = status.refused(reason, f"{reason} for {PAIR}: a person must act")
        cases.append(
            Case(
                f"stalled-{reason}",
                binding(after(stuck)),
                "Degraded",
                explained(stuck),
                "Failed",
                stuck.message,
            )
        )
    for outcome in (
        Outcome.USER_NOT_FOUND,
        Outcome.ROLE_NOT_FOUND,
        Outcome.UNAUTHENTICATED,
        Outcome.PERMISSION_DENIED,
        Outcome.INVALID,
    ):
        stuck = status.readiness_from_answer(answer(outcome), PAIR)
        cases.append(
            Case(
                f"stalled-answer-{outcome.name.lower()}",
                binding(after(stuck, READY)),
                "Degraded",
                explained(stuck),
                "Failed",
                stuck.message,
            )
        )
    protected = reconcile.refusal(
        RolePair(ConnectionRef("milvus"), "root", "admin"), frozenset({"root"})
    )
    assert protected is not None
    cases.append(
        Case(
            "stalled-protected-user",
            binding(after(protected)),
            "Degraded",
            explained(protected),
            "Failed",
            protected.message,
        )
    )
    # Deleting: the finalizer waits for Milvus, whatever the reason; never Degraded.
    removing = Operation.REMOVE_USER_FROM_ROLE
    for outcome in (Outcome.UNAVAILABLE, Outcome.PERMISSION_DENIED):
        held = status.readiness_from_answer(answer(outcome, removing), PAIR, removing=True)
        cases.append(
            Case(
                f"deleting-{outcome.name.lower()}",
                binding(after(held, READY), deleting=True),
                "Progressing",
                f"deletion waits: {held.message}",
                "Terminating",
                "Resource scheduled for deletion",
            )
        )
    cases.append(
        Case(
            "deleting-before-the-finalizer-ran",
            binding(READY, deleting=True),
            "Progressing",
            f"deletion waits: {GRANTED.message}",
            "Terminating",
        )
    )
    cases.append(
        Case(
            "deleting-without-status",
            binding(deleting=True),
            "Progressing",
            "deletion waits for the operator",
            "Terminating",
        )
    )
    # MilvusConnection: the same conditions, written by connection_status.
    version = "v2.3.5"
    connected = status.connection_readiness(
        answer(Outcome.SUCCESS, Operation.GET_VERSION), version, ""
    )
    up = status.connection_status({}, 1, connected, version)
    cases.append(Case("connection-ready", connection(up), "Healthy", connected.message, "Current"))
    for outcome, argo, kstatus in (
        (Outcome.UNAVAILABLE, "Progressing", "InProgress"),
        (Outcome.UNAUTHENTICATED, "Degraded", "Failed"),
        (Outcome.PERMISSION_DENIED, "Degraded", "Failed"),
    ):
        down = status.connection_readiness(
            answer(outcome, Operation.GET_VERSION), "", "milvus-root"
        )
        cases.append(
            Case(
                f"connection-{outcome.name.lower()}",
                connection(status.connection_status(up, 1, down, "")),
                argo,
                explained(down),
                kstatus,
                down.message,
            )
        )
    no_secret = status.refused(Reason.SECRET_NOT_FOUND, "Secret team-a/milvus-root not found")
    cases.append(
        Case(
            "connection-secret-not-found",
            connection(status.connection_status({}, 1, no_secret, "")),
            "Degraded",
            explained(no_secret),
            "Failed",
            no_secret.message,
        )
    )
    cases.append(
        Case(
            "cluster-connection-ready",
            connection(up, kind=CLUSTER_CONNECTION),
            "Healthy",
            connected.message,
            "Current",
        )
    )
    cases.append(
        Case(
            "cluster-connection-secret-not-found",
            connection(status.connection_status({}, 1, no_secret, ""), kind=CLUSTER_CONNECTION),
            "Degraded",
            explained(no_secret),
            "Failed",
            no_secret.message,
        )
    )
    cases.append(
        Case(
            "connection-stale-generation",
            connection(up, generation=3),
            "Progressing",
            "generation 3 not reconciled yet (observed 1)",
            "InProgress",
        )
    )
    return cases


CASES = _cases()
