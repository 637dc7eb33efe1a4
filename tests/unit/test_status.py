"""Conditions in the shape of metav1.Condition, reasons from answers, Events per call."""

from __future__ import annotations

import datetime

from milvus_rbac_operator import status
from milvus_rbac_operator.model import ConnectionRef, Operation, Outcome, ResStatus, RolePair
from milvus_rbac_operator.status import Readiness, Reason

PAIR = RolePair(ConnectionRef("milvus"), "alice", "reader")
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def res(outcome: Outcome, operation: Operation = Operation.ADD_USER_TO_ROLE) -> ResStatus:
    ok = outcome is Outcome.SUCCESS
    return ResStatus(
        operation,
        "alice",
        "reader",
        0 if ok else 65535,
        "Success" if ok else "UnexpectedError",
        "" if ok else "not found the user",
        outcome,
        T0,
    )


def test_last_transition_time_moves_only_when_status_changes() -> None:
    first = status.merge_condition([], Readiness(False, Reason.USER_NOT_FOUND, "a"), 1, T0)
    same = status.merge_condition(first, Readiness(False, Reason.ROLE_NOT_FOUND, "b"), 2, T1)
    flipped = status.merge_condition(same, Readiness(True, Reason.GRANTED, "c"), 2, T1)
    assert first[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["reason"] == "RoleNotFound"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    assert flipped[0]["status"] == "True"


def test_other_condition_types_are_kept() -> None:
    other = {
        "type": "Synced",
        "status": "True",
        "reason": "X",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    merged = status.merge_condition([other], Readiness(True, Reason.GRANTED, "ok"), 1, T0)
    assert [c["type"] for c in merged] == ["Synced", "Ready"]


def test_binding_status_carries_res_status_and_applied() -> None:
    answer = res(Outcome.SUCCESS)
    readiness = status.readiness_from_answer(answer, PAIR)
    patch = status.binding_status({}, 3, readiness, PAIR, answer)
    assert patch["observedGeneration"] == 3
    assert patch["applied"] == {"connection": "milvus", "username": "alice", "roleName": "reader"}
    assert patch["resStatus"] == {
        "operation": "AddUserToRole",
        "username": "alice",
        "roleName": "reader",
        "code": 0,
        "errorCode": "Success",
        "reason": "",
        "time": "2026-01-01T00:00:00Z",
    }
    assert patch["conditions"][0]["reason"] == "Granted"


def test_binding_status_without_a_call_keeps_previous_res_status() -> None:
    refused = status.refused(Reason.CONNECTION_NOT_FOUND, "MilvusConnection x not found")
    patch = status.binding_status({"resStatus": {"code": 0}}, 1, refused, None, None)
    assert "resStatus" not in patch
    assert patch["applied"] is None


def test_failed_answer_names_reason_code_and_hint() -> None:
    readiness = status.readiness_from_answer(res(Outcome.USER_NOT_FOUND), PAIR)
    assert not readiness.ready
    assert readiness.reason is Reason.USER_NOT_FOUND
    assert "code 65535" in readiness.message
    assert "not found the user" in readiness.message
    assert "create the user" in readiness.message


def test_connection_status_unchanged_means_no_write() -> None:
    readiness = Readiness(True, Reason.CONNECTED, "reachable")
    first = status.connection_status({}, 1, readiness, "v2.3.5")
    assert first["serverVersion"] == "v2.3.5"
    assert status.connection_status(first, 1, readiness, "v2.3.5") == {}
    assert status.connection_status(first, 2, readiness, "v2.3.5") != {}


def test_unauthenticated_connection_names_the_secret() -> None:
    answer = ResStatus(
        Operation.GET_VERSION,
        "",
        "",
        2,
        "UnexpectedError",
        "auth check failure",
        Outcome.UNAUTHENTICATED,
        T0,
    )
    readiness = status.connection_readiness(answer, "", "milvus-creds")
    assert readiness.reason is Reason.UNAUTHENTICATED
    assert "milvus-creds" in readiness.message


def test_every_call_gets_an_event() -> None:
    assert status.event_for(res(Outcome.SUCCESS)).reason == "Granted"
    revoked = status.event_for(res(Outcome.SUCCESS, Operation.REMOVE_USER_FROM_ROLE))
    assert (revoked.type, revoked.reason) == ("Normal", "Revoked")
    failed = status.event_for(res(Outcome.USER_NOT_FOUND))
    assert (failed.type, failed.reason) == ("Warning", "UserNotFound")
    assert "code 65535" in failed.message


def test_status_given_as_read_only_mapping_is_understood() -> None:
    """kopf passes status as a Mapping view, not a dict: nothing may be lost because of it."""
    from types import MappingProxyType

    readiness = Readiness(True, Reason.CONNECTED, "reachable")
    first = status.connection_status({}, 1, readiness, "v2.3.5")
    assert status.connection_status(MappingProxyType(first), 1, readiness, "v2.3.5") == {}

    failing = Readiness(False, Reason.USER_NOT_FOUND, "missing")
    before = status.binding_status({}, 1, failing, None, None)
    before["conditions"][0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    after = status.binding_status(MappingProxyType(before), 1, failing, None, None)
    assert after["conditions"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert RolePair.from_status(MappingProxyType(PAIR.to_status())) == PAIR


def types_of(conditions: list[dict[str, object]]) -> dict[object, object]:
    return {c["type"]: c["status"] for c in conditions}


def test_transient_failure_is_reconciling_not_stalled() -> None:
    readiness = Readiness(False, Reason.MILVUS_UNAVAILABLE, "down")
    merged = status.merge_conditions([], readiness, 1, T0)
    assert types_of(merged) == {"Ready": "False", "Reconciling": "True"}


def test_failure_a_person_must_fix_is_stalled() -> None:
    readiness = Readiness(False, Reason.FORBIDDEN, "policy")
    merged = status.merge_conditions([], readiness, 1, T0)
    assert types_of(merged) == {"Ready": "False", "Stalled": "True"}
    assert merged[-1]["reason"] == "Forbidden"


def test_ready_drops_reconciling_and_stalled() -> None:
    stalled = status.merge_conditions([], Readiness(False, Reason.USER_NOT_FOUND, "x"), 1, T0)
    reconciling = status.merge_conditions(
        stalled, Readiness(False, Reason.MILVUS_UNAVAILABLE, "y"), 1, T0
    )
    assert types_of(reconciling) == {"Ready": "False", "Reconciling": "True"}
    ready = status.merge_conditions(reconciling, Readiness(True, Reason.GRANTED, "z"), 1, T1)
    assert types_of(ready) == {"Ready": "True"}
