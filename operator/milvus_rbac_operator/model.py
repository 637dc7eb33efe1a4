"""The vocabulary shared by the core: role pairs, Milvus operations and their answers."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RolePair:
    """One user in one role, on one MilvusConnection (named in the binding's namespace)."""

    connection: str
    username: str
    role_name: str

    def to_status(self) -> dict[str, str]:
        return {
            "connection": self.connection,
            "username": self.username,
            "roleName": self.role_name,
        }

    @classmethod
    def from_status(cls, applied: Any) -> RolePair | None:
        if not isinstance(applied, Mapping):
            return None
        try:
            return cls(
                str(applied["connection"]), str(applied["username"]), str(applied["roleName"])
            )
        except KeyError:
            return None

    @classmethod
    def from_spec(cls, spec: Any) -> RolePair:
        return cls(str(spec["connectionRef"]["name"]), str(spec["username"]), str(spec["roleName"]))

    def __str__(self) -> str:
        return f"user {self.username} in role {self.role_name} (connection {self.connection})"


class Operation(enum.StrEnum):
    """Milvus RBAC calls, named as in the Milvus API."""

    ADD_USER_TO_ROLE = "AddUserToRole"
    REMOVE_USER_FROM_ROLE = "RemoveUserFromRole"
    GET_VERSION = "GetVersion"
    SELECT_USER = "SelectUser"


class Outcome(enum.Enum):
    """What an answer from Milvus means, whatever numbers a given Milvus version used."""

    SUCCESS = "success"
    USER_NOT_FOUND = "user not found"
    ROLE_NOT_FOUND = "role not found"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission denied"
    RATE_LIMITED = "rate limited"
    INVALID = "invalid"
    FAILED = "failed"

    @property
    def transient(self) -> bool:
        """Worth a quick retry with backoff: the same call may well succeed soon."""
        return self in {Outcome.UNAVAILABLE, Outcome.TIMEOUT, Outcome.RATE_LIMITED, Outcome.FAILED}


@dataclass(frozen=True)
class ResStatus:
    """Milvus's answer to one call (its ResStatus), or the client's error when none came."""

    operation: Operation
    username: str
    role_name: str
    code: int
    error_code: str
    reason: str
    outcome: Outcome
    time: datetime.datetime

    @property
    def succeeded(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def to_status(self) -> dict[str, Any]:
        return {
            "operation": str(self.operation),
            "username": self.username,
            "roleName": self.role_name,
            "code": self.code,
            "errorCode": self.error_code,
            "reason": self.reason,
            "time": rfc3339(self.time),
        }


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
