"""The benchmark's users and roles in Milvus, and the exact grants it expects to find there."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pymilvus import MilvusClient

from milvus_rbac_operator.devenv.milvus_server import ROOT_PASSWORD, ROOT_USERNAME

USER_PREFIX = "bu"
FLOOR_USER_PREFIX = "fu"  # the floor's single units: never in the operator's expected state
ROLE_PREFIX = "br"
Pair = tuple[str, str]


def user_name(index: int) -> str:
    return f"{USER_PREFIX}{index:05d}"


def floor_user_name(index: int) -> str:
    return f"{FLOOR_USER_PREFIX}{index:05d}"


def role_name(index: int, roles: int) -> str:
    return f"{ROLE_PREFIX}{index % roles:02d}"


def admin_client(uri: str) -> MilvusClient:
    return MilvusClient(uri=uri, token=f"{ROOT_USERNAME}:{ROOT_PASSWORD}", timeout=30)


def seed(
    uri: str, users: int, roles: int, say: Callable[[str], None], floor_users: int = 0
) -> None:
    """Create the benchmark's users, the floor's, and the roles (Milvus takes them one at a
    time, ~5 ms each)."""
    client = admin_client(uri)
    try:
        existing_roles = set(client.list_roles())
        for index in range(roles):
            if role_name(index, roles) not in existing_roles:
                client.create_role(role_name(index, roles))
        existing = set(client.list_users())
        started = time.monotonic()
        names = [user_name(i) for i in range(users)] + [
            floor_user_name(i) for i in range(floor_users)
        ]
        for index, name in enumerate(names):
            if name not in existing:
                client.create_user(name, f"{name}-password")
            if index and index % 2000 == 0:
                say(f"  {index} users ({time.monotonic() - started:.0f} s)")
    finally:
        client.close()


def bench_grants(uri: str) -> set[Pair]:
    """Every (user, role) grant of the benchmark's users, in one SelectUser listing."""
    client = admin_client(uri)
    try:
        listing = client._get_connection().select_all_user(include_role_info=True)
        found: set[Pair] = set()
        for item in listing.groups:
            if str(item.username).startswith(USER_PREFIX):
                found.update((str(item.username), str(role)) for role in item.roles)
        return found
    finally:
        client.close()


def revoke(uri: str, pairs: Iterable[Pair]) -> None:
    """Remove grants behind the operator's back (to be corrected by its drift check)."""
    client = admin_client(uri)
    try:
        for user, role in pairs:
            client.revoke_role(user, role)
    finally:
        client.close()


@dataclass(frozen=True)
class StateCheck:
    """Milvus's grants of the benchmark's users against the set expected."""

    expected: int
    actual: int
    missing: int
    extra: int
    # A few of each, to find the bindings (and operator log lines) concerned.
    missing_examples: tuple[Pair, ...] = ()
    extra_examples: tuple[Pair, ...] = ()

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.extra == 0

    def as_json(self) -> dict[str, object]:
        return {
            "exact": self.exact,
            "expected": self.expected,
            "actual": self.actual,
            "missing": self.missing,
            "extra": self.extra,
            "missing_examples": [list(p) for p in self.missing_examples],
            "extra_examples": [list(p) for p in self.extra_examples],
        }


def compare(expected: set[Pair], actual: set[Pair], examples: int = 10) -> StateCheck:
    missing, extra = sorted(expected - actual), sorted(actual - expected)
    return StateCheck(
        expected=len(expected),
        actual=len(actual),
        missing=len(missing),
        extra=len(extra),
        missing_examples=tuple(missing[:examples]),
        extra_examples=tuple(extra[:examples]),
    )
