"""Classifying Milvus answers by meaning, across the numbers different versions use."""

from __future__ import annotations

import grpc
import pytest
from pymilvus import MilvusException

from milvus_rbac_operator.milvus import Credentials, answer_from_error, classify, redact
from milvus_rbac_operator.model import Outcome


@pytest.mark.parametrize(
    ("code", "error_code", "reason", "grpc_status", "expected"),
    [
        # Measured on Milvus 2.3.5.
        (0, "Success", "", "", Outcome.SUCCESS),
        (
            65535,
            "OperateUserRoleFailure",
            "not found the role, maybe the role isn't existed or internal system error",
            "",
            Outcome.ROLE_NOT_FOUND,
        ),
        (
            65535,
            "UnexpectedError",
            "not found the user, maybe the user isn't existed or internal system error",
            "",
            Outcome.USER_NOT_FOUND,
        ),
        (
            1100,
            "IllegalArgument",
            "invalid user name 1bad, the first character must be a letter",
            "",
            Outcome.INVALID,
        ),
        (
            2,
            "UnexpectedError",
            "Fail connecting to server on 127.0.0.1:1, illegal connection params or server "
            "unavailable (UNAVAILABLE: failed to connect to all addresses)",
            "UNAVAILABLE",
            Outcome.UNAVAILABLE,
        ),
        (
            2,
            "UnexpectedError",
            "Fail connecting to server (UNAUTHENTICATED: auth check failure, please check username "
            "and password are correct)",
            "UNAUTHENTICATED",
            Outcome.UNAUTHENTICATED,
        ),
        (
            7,
            "PERMISSION_DENIED",
            "PERMISSION_DENIED: PrivilegeManageOwnership: permission deny to alice",
            "PERMISSION_DENIED",
            Outcome.PERMISSION_DENIED,
        ),
        (1, "UnexpectedError", "[grant_role] Retry timeout: 2s", "", Outcome.TIMEOUT),
        # Later versions: same meanings, other numbers and words.
        (1800, "", "user hasn't authenticated", "", Outcome.UNAUTHENTICATED),
        (
            8,
            "RateLimit",
            "request is rejected by grpc RateLimiter middleware",
            "",
            Outcome.RATE_LIMITED,
        ),
        (65535, "", "role not found[role=reader]", "", Outcome.ROLE_NOT_FOUND),
        (65535, "", "user not found[user=alice]", "", Outcome.USER_NOT_FOUND),
        (3, "PermissionDenied", "", "", Outcome.PERMISSION_DENIED),
        (1, "NotReadyServe", "proxy not healthy", "", Outcome.UNAVAILABLE),
        (0, "", "", "DEADLINE_EXCEEDED", Outcome.TIMEOUT),
        (65535, "UnexpectedError", "something odd happened", "", Outcome.FAILED),
    ],
)
def test_classify(
    code: int, error_code: str, reason: str, grpc_status: str, expected: Outcome
) -> None:
    assert classify(code, error_code, reason, grpc_status) is expected


class FakeRpcError(grpc.RpcError):
    def __init__(self, status: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._status, self._details = status, details

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str:
        return self._details


def test_wrapped_connect_failure_reveals_unauthenticated() -> None:
    cause = FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "auth check failure")
    try:
        try:
            raise cause
        except grpc.RpcError as rpc:
            raise MilvusException(code=2, message="Fail connecting to server") from rpc
    except MilvusException as wrapped:
        code, error_code, reason, grpc_status = answer_from_error(wrapped)
    assert (code, grpc_status) == (2, "UNAUTHENTICATED")
    assert "auth check failure" in reason
    assert classify(code, error_code, reason, grpc_status) is Outcome.UNAUTHENTICATED


def test_bare_grpc_error_keeps_its_status() -> None:
    code, error_code, reason, grpc_status = answer_from_error(
        FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "permission deny to alice")
    )
    assert (code, error_code, grpc_status) == (7, "PERMISSION_DENIED", "PERMISSION_DENIED")
    assert "permission deny" in reason


def test_unexpected_exception_becomes_failed_answer() -> None:
    code, error_code, reason, _ = answer_from_error(ValueError("boom"))
    assert (code, error_code, reason) == (-1, "ValueError", "boom")


def test_redact_removes_every_secret() -> None:
    secrets = Credentials(username="admin", password="s3cr3t-Pass").secrets()
    text = "auth failed for admin:s3cr3t-Pass (password s3cr3t-Pass)"
    redacted = redact(text, secrets)
    assert "s3cr3t-Pass" not in redacted
    assert "<redacted>" in redacted


def test_credentials_repr_hides_secrets() -> None:
    assert "hunter2" not in repr(Credentials(username="u", password="hunter2"))
    assert "tok-123" not in repr(Credentials(token="tok-123"))
