"""The one place that talks to Milvus: every call returns a ResStatus, every failure is classified.

Classification goes by what an answer means (user absent, role absent, unreachable, denied,
invalid), using messages and gRPC statuses as well as codes, because Milvus 2.3 to 2.6 number
the same failures differently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from pymilvus import AsyncMilvusClient, MilvusException
from pymilvus.grpc_gen import common_pb2

from milvus_rbac_operator import metrics
from milvus_rbac_operator.model import Operation, Outcome, ResStatus, utcnow

# pymilvus logs a full traceback at ERROR for every failed call; our ResStatus says it better.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

_SUCCESS_CODE = 0
_SUCCESS_ERROR_CODE = "Success"
_REDACTED = "<redacted>"


@dataclass(frozen=True)
class Credentials:
    """Username and password, or a token. Never printed: repr shows which kind only."""

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def as_token(self) -> str:
        return self.token or f"{self.username}:{self.password}"

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.token, self.as_token()) if s)

    def __repr__(self) -> str:
        return "Credentials(token=***)" if self.token else "Credentials(username/password=***)"


@dataclass(frozen=True)
class Endpoint:
    """Where a Milvus is and how to reach it (everything but the credentials)."""

    uri: str
    database: str = ""
    ca_pem: bytes = b""
    server_name: str = ""
    timeout_seconds: float = 10.0


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


_USER_NOT_FOUND = re.compile(r"not found the user|user\b.*\bnot (found|exist)|UserNotExist", re.I)
_ROLE_NOT_FOUND = re.compile(r"not found the role|role\b.*\bnot (found|exist)|RoleNotExist", re.I)
_UNAUTHENTICATED = re.compile(r"auth check failure|unauthenticated|not authenticated", re.I)
_DENIED = re.compile(r"permission den(y|ied)|PermissionDenied|not permitted", re.I)
_UNAVAILABLE = re.compile(
    r"fail(ed)? connecting|failed to connect|connection refused|server unavailable|not ready",
    re.I,
)
_TIMEOUT = re.compile(r"timeout|timed out|deadline exceeded", re.I)
_RATE = re.compile(r"rate limit|RateLimit|too many requests", re.I)
_INVALID = re.compile(r"invalid|IllegalArgument|illegal", re.I)
_TLS = re.compile(r"ssl|tls|handshake|certificate", re.I)

_GRPC_OUTCOMES = {
    "UNAUTHENTICATED": Outcome.UNAUTHENTICATED,
    "PERMISSION_DENIED": Outcome.PERMISSION_DENIED,
    "UNAVAILABLE": Outcome.UNAVAILABLE,
    "DEADLINE_EXCEEDED": Outcome.TIMEOUT,
    "RESOURCE_EXHAUSTED": Outcome.RATE_LIMITED,
    "INVALID_ARGUMENT": Outcome.INVALID,
}
# Codes with one meaning across versions: Milvus 2.4+ merr codes and the legacy ErrorCode enum.
_CODE_OUTCOMES = {
    1100: Outcome.INVALID,  # ErrParameterInvalid
    1800: Outcome.UNAUTHENTICATED,  # ErrUserNotAuthenticated (2.4+)
    8: Outcome.RATE_LIMITED,  # ErrServiceRateLimit (2.4+)
}
_ERROR_CODE_OUTCOMES = {
    "PermissionDenied": Outcome.PERMISSION_DENIED,
    "RateLimit": Outcome.RATE_LIMITED,
    "IllegalArgument": Outcome.INVALID,
    "ConnectFailed": Outcome.UNAVAILABLE,
    "NotReadyServe": Outcome.UNAVAILABLE,
    "NotReadyCoordActivating": Outcome.UNAVAILABLE,
}


def classify(code: int, error_code: str, reason: str, grpc_status: str = "") -> Outcome:
    """What one answer means. Specific meanings (user or role absent) win over generic codes."""
    if code == _SUCCESS_CODE and error_code in ("", _SUCCESS_ERROR_CODE) and not grpc_status:
        return Outcome.SUCCESS
    # gRPC reports a failed handshake as UNAVAILABLE; retrying fast would not fix a wrong CA.
    if _TLS.search(reason):
        return Outcome.TLS
    if grpc_status in _GRPC_OUTCOMES:
        return _GRPC_OUTCOMES[grpc_status]
    for pattern, outcome in (
        (_USER_NOT_FOUND, Outcome.USER_NOT_FOUND),
        (_ROLE_NOT_FOUND, Outcome.ROLE_NOT_FOUND),
        (_UNAUTHENTICATED, Outcome.UNAUTHENTICATED),
        (_DENIED, Outcome.PERMISSION_DENIED),
        (_RATE, Outcome.RATE_LIMITED),
    ):
        if pattern.search(reason) or pattern.search(error_code):
            return outcome
    if code in _CODE_OUTCOMES:
        return _CODE_OUTCOMES[code]
    if error_code in _ERROR_CODE_OUTCOMES:
        return _ERROR_CODE_OUTCOMES[error_code]
    for pattern, outcome in (
        (_TIMEOUT, Outcome.TIMEOUT),
        (_UNAVAILABLE, Outcome.UNAVAILABLE),
        (_INVALID, Outcome.INVALID),
    ):
        if pattern.search(reason):
            return outcome
    return Outcome.FAILED


def _error_code_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(common_pb2.ErrorCode.Name(int(value)))
    except (ValueError, TypeError):
        return str(value)


def _rpc_error_in(exc: BaseException) -> grpc.RpcError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, grpc.RpcError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def answer_from_error(exc: BaseException) -> tuple[int, str, str, str]:
    """(code, errorCode, reason, gRPC status) from whatever the client raised."""
    rpc = _rpc_error_in(exc)
    grpc_status = ""
    rpc_details = ""
    if rpc is not None:
        status_code = rpc.code() if callable(getattr(rpc, "code", None)) else None
        grpc_status = status_code.name if isinstance(status_code, grpc.StatusCode) else ""
        details = rpc.details() if callable(getattr(rpc, "details", None)) else ""
        rpc_details = f"{grpc_status}: {details}" if grpc_status else str(details)
    if isinstance(exc, MilvusException):
        code = int(exc.code) if exc.code is not None else -1
        error_code = _error_code_name(getattr(exc, "compatible_code", ""))
        reason = str(exc.message)
        # "Fail connecting ... illegal params or server unavailable" hides the real cause.
        if rpc_details:
            reason = f"{reason} ({rpc_details})"
        return code, error_code, reason, grpc_status
    if rpc is not None:
        status_code = rpc.code()
        value = status_code.value[0] if isinstance(status_code, grpc.StatusCode) else -1
        return int(value), grpc_status, rpc_details, grpc_status
    return -1, type(exc).__name__, str(exc) or type(exc).__name__, ""


class MilvusRBAC:
    """An AsyncMilvusClient for one connection, speaking in ResStatus values."""

    def __init__(
        self, endpoint: Endpoint, credentials: Credentials, max_in_flight: int = 32
    ) -> None:
        self.endpoint = endpoint
        # A restart resumes every binding at once. Without a bound, thousands of calls share one
        # channel at a time: Milvus sees a burst, and gRPC keeps the memory of the peak (about
        # 200 KB a call, measured). The timeout of a call starts once it is sent.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._secrets = credentials.secrets()
        self._tls_dir: Path | None = None
        options: dict[str, Any] = {}
        if endpoint.ca_pem:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="mrbo-tls-"))
            ca_path = self._tls_dir / "ca.pem"
            ca_path.write_bytes(endpoint.ca_pem)
            options["server_pem_path"] = str(ca_path)
            options["secure"] = True
        if endpoint.server_name:
            options["server_name"] = endpoint.server_name
        self._client = AsyncMilvusClient(
            uri=endpoint.uri,
            token=credentials.as_token(),
            db_name=endpoint.database,
            timeout=endpoint.timeout_seconds,
            dedicated=True,
            **options,
        )

    async def add_user_to_role(
        self, username: str, role_name: str, timeout: float | None = None
    ) -> ResStatus:
        return await self._call(
            Operation.ADD_USER_TO_ROLE,
            username,
            role_name,
            timeout,
            lambda t: self._client.grant_role(username, role_name, timeout=t),
        )

    async def remove_user_from_role(
        self, username: str, role_name: str, timeout: float | None = None
    ) -> ResStatus:
        return await self._call(
            Operation.REMOVE_USER_FROM_ROLE,
            username,
            role_name,
            timeout,
            lambda t: self._client.revoke_role(username, role_name, timeout=t),
        )

    async def get_server_version(self, timeout: float | None = None) -> tuple[ResStatus, str]:
        """Reachable and authenticated (the connection handshake checks the credentials)."""
        version: list[str] = []

        async def fetch(t: float) -> None:
            version.append(str(await self._client.get_server_version(timeout=t)))

        answer = await self._call(Operation.GET_VERSION, "", "", timeout, fetch)
        return answer, (version[0] if version else "")

    async def list_grants(
        self, timeout: float | None = None
    ) -> tuple[ResStatus, dict[str, frozenset[str]]]:
        """Every user with its roles, in one SelectUser call (the drift check's only RPC)."""
        grants: dict[str, frozenset[str]] = {}

        async def fetch(t: float) -> None:
            # AsyncMilvusClient.describe_user asks for one user; its handler asks for all
            # when given none, which is the single listing call the drift check is built on.
            handler = await self._client._get_connection()
            response = await handler.describe_user(None, True, timeout=t)
            for result in response.results:
                grants[str(result.user.name)] = frozenset(str(r.name) for r in result.roles)

        answer = await self._call(Operation.SELECT_USER, "", "", timeout, fetch)
        return answer, grants

    async def _call(
        self,
        operation: Operation,
        username: str,
        role_name: str,
        timeout: float | None,
        invoke: Callable[[float], Awaitable[Any]],
    ) -> ResStatus:
        async with self._in_flight:
            started = time.monotonic()
            answer = await self._answer_of(operation, username, role_name, timeout, invoke)
        metrics.MILVUS_CALL_SECONDS.labels(str(operation)).observe(time.monotonic() - started)
        metrics.MILVUS_CALLS.labels(str(operation), answer.outcome.name.lower()).inc()
        return answer

    async def _answer_of(
        self,
        operation: Operation,
        username: str,
        role_name: str,
        timeout: float | None,
        invoke: Callable[[float], Awaitable[Any]],
    ) -> ResStatus:
        seconds = timeout or self.endpoint.timeout_seconds
        try:
            # The SDK's own timeout does not cover every wait (channel set-up); this one does.
            async with asyncio.timeout(seconds):
                await invoke(seconds)
        except TimeoutError:
            return self._answer(
                operation,
                username,
                role_name,
                -1,
                "Timeout",
                f"no answer from Milvus within {seconds:g}s",
                Outcome.TIMEOUT,
            )
        except Exception as exc:
            code, error_code, reason, grpc_status = answer_from_error(exc)
            outcome = classify(code, error_code, reason, grpc_status)
            # Only text from outside can carry a credential; our own wording never does.
            error_code, reason = redact(error_code, self._secrets), redact(reason, self._secrets)
            if outcome is Outcome.TIMEOUT:
                reason = f"no answer from Milvus within {seconds:g}s: {reason}"
            return self._answer(operation, username, role_name, code, error_code, reason, outcome)
        return self._answer(
            operation, username, role_name, _SUCCESS_CODE, _SUCCESS_ERROR_CODE, "", Outcome.SUCCESS
        )

    def _answer(
        self,
        operation: Operation,
        username: str,
        role_name: str,
        code: int,
        error_code: str,
        reason: str,
        outcome: Outcome,
    ) -> ResStatus:
        return ResStatus(
            operation=operation,
            username=username,
            role_name=role_name,
            code=code,
            error_code=error_code,
            reason=reason,
            outcome=outcome,
            time=utcnow(),
        )

    async def close(self) -> None:
        # Closing a broken channel may fail; there is nothing more to do with it then.
        with contextlib.suppress(Exception):
            await self._client.close()
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
