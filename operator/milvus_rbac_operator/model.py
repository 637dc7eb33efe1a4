"""The vocabulary shared by the core: role pairs, Milvus operations and their answers."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NAMESPACED_CONNECTION = "MilvusConnection"
CLUSTER_CONNECTION = "ClusterMilvusConnection"
# Where a connection lives: (namespace, name); cluster-scoped ones have no namespace.
ConnectionKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ConnectionRef:
    """A binding's connectionRef: a MilvusConnection in its namespace, or a cluster one."""

    name: str
    kind: str = NAMESPACED_CONNECTION

    @property
    def cluster_scoped(self) -> bool:
        return self.kind == CLUSTER_CONNECTION

    def key(self, namespace: str) -> ConnectionKey:
        return ("", self.name) if self.cluster_scoped else (namespace, self.name)

    @classmethod
    def from_spec(cls, ref: Any) -> ConnectionRef:
        return cls(str(ref["name"]), str(ref.get("kind") or NAMESPACED_CONNECTION))

    def __str__(self) -> str:
        return f"{CLUSTER_CONNECTION} {self.name}" if self.cluster_scoped else self.name


@dataclass(frozen=True, slots=True)
class RolePair:
    """One user in one role, through one connection (named from the binding's namespace)."""

    connection: ConnectionRef
    username: str
    role_name: str

    def to_status(self) -> dict[str, str]:
        shown = {
            "connection": self.connection.name,
            "username": self.username,
            "roleName": self.role_name,
        }
        if self.connection.cluster_scoped:
            shown["connectionKind"] = self.connection.kind
        return shown

    @classmethod
    def from_status(cls, applied: Any) -> RolePair | None:
        if not isinstance(applied, Mapping):
            return None
        try:
            connection = ConnectionRef(
                str(applied["connection"]),
                str(applied.get("connectionKind") or NAMESPACED_CONNECTION),
            )
            return cls(connection, str(applied["username"]), str(applied["roleName"]))
        except KeyError:
            return None

    @classmethod
    def from_spec(cls, spec: Any) -> RolePair:
        return cls(
            ConnectionRef.from_spec(spec["connectionRef"]),
            str(spec["username"]),
            str(spec["roleName"]),
        )

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
    TLS = "TLS handshake failed"
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
