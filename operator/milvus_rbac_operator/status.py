"""Owns status: the Ready condition (metav1.Condition shape), reasons, ResStatus and Events.

Nothing else builds a condition. Reasons are CamelCase and stable: users script against them.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from milvus_rbac_operator.model import (
    Operation,
    Outcome,
    ResStatus,
    RolePair,
    rfc3339,
    utcnow,
)

READY = "Ready"
# kstatus's abnormal-true conditions, present only while true, so that kstatus, Flux and Argo CD
# tell a binding that is still converging (Reconciling) from one only a person can fix (Stalled).
RECONCILING = "Reconciling"
STALLED = "Stalled"
_MAX_MESSAGE = 4096


class Reason(enum.StrEnum):
    GRANTED = "Granted"
    DRIFT_CORRECTED = "DriftCorrected"
    CONNECTED = "Connected"
    USER_NOT_FOUND = "UserNotFound"
    ROLE_NOT_FOUND = "RoleNotFound"
    MILVUS_UNAVAILABLE = "MilvusUnavailable"
    RATE_LIMITED = "RateLimited"
    UNAUTHENTICATED = "Unauthenticated"
    PERMISSION_DENIED = "PermissionDenied"
    INVALID_NAME = "InvalidName"
    MILVUS_ERROR = "MilvusError"
    PROTECTED_USER = "ProtectedUser"
    CONNECTION_NOT_FOUND = "ConnectionNotFound"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_INVALID = "SecretInvalid"
    FORBIDDEN = "Forbidden"
    HOST_NOT_ALLOWED = "HostNotAllowed"
    TLS_ERROR = "TLSError"
    SHARED_GRANT_PENDING = "SharedGrantPending"


# Not ready for a reason that only a person can fix: retried at the slow pace, and Stalled.
# Every other reason is retried with backoff and shows as Reconciling.
NEEDS_A_PERSON = frozenset(
    {
        Reason.USER_NOT_FOUND,
        Reason.ROLE_NOT_FOUND,
        Reason.UNAUTHENTICATED,
        Reason.PERMISSION_DENIED,
        Reason.INVALID_NAME,
        Reason.PROTECTED_USER,
        Reason.CONNECTION_NOT_FOUND,
        Reason.SECRET_NOT_FOUND,
        Reason.SECRET_INVALID,
        Reason.FORBIDDEN,
        Reason.HOST_NOT_ALLOWED,
        Reason.TLS_ERROR,
    }
)


_OUTCOME_REASONS = {
    Outcome.SUCCESS: Reason.GRANTED,
    Outcome.USER_NOT_FOUND: Reason.USER_NOT_FOUND,
    Outcome.ROLE_NOT_FOUND: Reason.ROLE_NOT_FOUND,
    Outcome.UNAVAILABLE: Reason.MILVUS_UNAVAILABLE,
    Outcome.TIMEOUT: Reason.MILVUS_UNAVAILABLE,
    Outcome.RATE_LIMITED: Reason.RATE_LIMITED,
    Outcome.UNAUTHENTICATED: Reason.UNAUTHENTICATED,
    Outcome.PERMISSION_DENIED: Reason.PERMISSION_DENIED,
    Outcome.INVALID: Reason.INVALID_NAME,
    Outcome.TLS: Reason.TLS_ERROR,
    Outcome.FAILED: Reason.MILVUS_ERROR,
}

_HINTS = {
    Outcome.USER_NOT_FOUND: "create the user in Milvus; the binding retries by itself",
    Outcome.ROLE_NOT_FOUND: "create the role in Milvus; the binding retries by itself",
    Outcome.UNAVAILABLE: "retrying with backoff",
    Outcome.TIMEOUT: "retrying with backoff",
    Outcome.RATE_LIMITED: "retrying with backoff",
    Outcome.UNAUTHENTICATED: "fix the credentials in the connection's Secret",
    Outcome.PERMISSION_DENIED: "the connection's Milvus user may not manage roles",
    Outcome.TLS: "check spec.tls (CA and server name) of the connection; no plaintext fallback",
}


@dataclass(frozen=True)
class Readiness:
    """The Ready condition to be: status, reason, message."""

    ready: bool
    reason: Reason
    message: str


def answer_summary(answer: ResStatus) -> str:
    who = f"({answer.username}, {answer.role_name})" if answer.username else ""
    summary = f"{answer.operation}{who}: code {answer.code}, errorCode {answer.error_code}"
    return f"{summary}, reason: {answer.reason}" if answer.reason else summary


def readiness_from_answer(answer: ResStatus, pair: RolePair, removing: bool = False) -> Readiness:
    """The Ready condition after a Milvus call about `pair` (failed, or the final success)."""
    reason = _OUTCOME_REASONS[answer.outcome]
    if answer.succeeded:
        return Readiness(True, reason, f"{pair} is in place ({answer_summary(answer)})")
    doing = "remove" if removing else "apply"
    hint = _HINTS.get(answer.outcome)
    message = f"Cannot {doing} {pair}: {answer_summary(answer)}"
    return Readiness(False, reason, f"{message}; {hint}" if hint else message)


def refused(reason: Reason, message: str) -> Readiness:
    return Readiness(False, reason, message)


def removal_waits(pair: RolePair, adding: tuple[str, ...]) -> Readiness:
    """A removal held back for other bindings that want the same grant and are about to add it."""
    return Readiness(
        False,
        Reason.SHARED_GRANT_PENDING,
        f"RemoveUserFromRole({pair.username}, {pair.role_name}) waits for {', '.join(adding)}, "
        "which wants the same grant and has not been reconciled yet",
    )


def merge_condition(
    conditions: Any,
    readiness: Readiness,
    generation: int,
    now: datetime.datetime | None = None,
    condition_type: str = READY,
) -> list[dict[str, Any]]:
    """Conditions with `condition_type` set; its lastTransitionTime moves only with its status."""
    existing = [dict(c) for c in (conditions or []) if isinstance(c, Mapping)]
    status = "True" if readiness.ready else "False"
    previous = next((c for c in existing if c.get("type") == condition_type), None)
    if (
        previous is not None
        and previous.get("status") == status
        and previous.get("lastTransitionTime")
    ):
        transition = str(previous["lastTransitionTime"])
    else:
        transition = rfc3339(now or utcnow())
    condition = {
        "type": condition_type,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": transition,
        "reason": str(readiness.reason),
        "message": readiness.message[:_MAX_MESSAGE],
    }
    return [c for c in existing if c.get("type") != condition_type] + [condition]


def merge_conditions(
    conditions: Any, readiness: Readiness, generation: int, now: datetime.datetime | None = None
) -> list[dict[str, Any]]:
    """Ready, plus Reconciling or Stalled while not ready (kstatus), each only while true."""
    merged = merge_condition(conditions, readiness, generation, now)
    stalled = not readiness.ready and readiness.reason in NEEDS_A_PERSON
    reconciling = not readiness.ready and not stalled
    for condition_type, holds in ((RECONCILING, reconciling), (STALLED, stalled)):
        if holds:
            marked = Readiness(True, readiness.reason, readiness.message)
            merged = merge_condition(merged, marked, generation, now, condition_type)
        else:
            merged = [c for c in merged if c.get("type") != condition_type]
    return merged


def is_ready(current: Any) -> bool:
    """Whether a status (as kopf hands it over) has Ready=True."""
    conditions = (current or {}).get("conditions") or ()
    return any(
        isinstance(c, Mapping) and c.get("type") == READY and c.get("status") == "True"
        for c in conditions
    )


def binding_status(
    current: Any,
    generation: int,
    readiness: Readiness,
    applied: RolePair | None,
    answer: ResStatus | None,
) -> dict[str, Any]:
    """The status fields to patch after one reconcile of a MilvusRoleBinding."""
    # kopf hands status over as a read-only Mapping view, not a dict.
    current = dict(current) if isinstance(current, Mapping) else {}
    patch: dict[str, Any] = {
        "observedGeneration": generation,
        "applied": applied.to_status() if applied else None,
        "conditions": merge_conditions(current.get("conditions"), readiness, generation),
    }
    if answer is not None:
        patch["resStatus"] = answer.to_status()
    return patch


def connection_status(
    current: Any, generation: int, readiness: Readiness, server_version: str
) -> dict[str, Any]:
    """The status fields of a MilvusConnection; empty when nothing would change (no write)."""
    current = dict(current) if isinstance(current, Mapping) else {}
    patch: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(current.get("conditions"), readiness, generation),
    }
    if server_version:
        patch["serverVersion"] = server_version
    unchanged = all(current.get(key) == value for key, value in patch.items())
    return {} if unchanged else patch


def connection_readiness(answer: ResStatus, version: str, secret_name: str) -> Readiness:
    if answer.succeeded:
        return Readiness(True, Reason.CONNECTED, f"reachable and authenticated; Milvus {version}")
    reason = _OUTCOME_REASONS[answer.outcome]
    message = f"{answer_summary(answer)}"
    if answer.outcome is Outcome.UNAUTHENTICATED:
        message = f"Milvus rejected the credentials in Secret {secret_name}: {message}"
    return Readiness(False, reason, message)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


def event_for(answer: ResStatus) -> Event:
    """The Kubernetes Event recorded for every Milvus call."""
    if answer.succeeded:
        done = "Granted" if answer.operation is Operation.ADD_USER_TO_ROLE else "Revoked"
        return Event("Normal", done, answer_summary(answer))
    return Event("Warning", str(_OUTCOME_REASONS[answer.outcome]), answer_summary(answer))


def drift_readiness(answer: ResStatus, pair: RolePair) -> Readiness:
    """After re-adding a grant someone removed behind the operator's back."""
    if answer.succeeded:
        return Readiness(
            True,
            Reason.DRIFT_CORRECTED,
            f"{pair} was missing in Milvus and was added again ({answer_summary(answer)})",
        )
    return readiness_from_answer(answer, pair)


def drift_event(answer: ResStatus) -> Event:
    event = event_for(answer)
    reason = str(Reason.DRIFT_CORRECTED) if answer.succeeded else event.reason
    return Event(event.type, reason, f"drift: {event.message}")
