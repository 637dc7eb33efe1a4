"""The connection registry reads a connection and its Secret again only when it has to."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from milvus_rbac_operator.connections import ConnectionRegistry
from milvus_rbac_operator.milvus import Credentials, Endpoint, MilvusRBAC
from milvus_rbac_operator.model import ConnectionRef
from milvus_rbac_operator.reconcile import UnusableConnectionError

MILVUS = ConnectionRef("milvus")


class Objects:
    """The connection and Secret the registry reads, and how often it read them."""

    def __init__(self) -> None:
        self.password = "first"
        self.reads = 0
        self.secret_exists = True

    async def connection(self, namespace: str, ref: ConnectionRef) -> dict[str, Any]:
        self.reads += 1
        await asyncio.sleep(0)  # a real read gives other reconciles their turn
        return {
            "spec": {"uri": "http://milvus.db.svc:19530", "credentialsSecretRef": {"name": "s"}}
        }

    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        if not self.secret_exists:
            return None
        encode = lambda v: base64.b64encode(v.encode()).decode()  # noqa: E731
        return {"username": encode("root"), "password": encode(self.password)}


class Client:
    def __init__(self, endpoint: Endpoint, credentials: Credentials) -> None:
        self.credentials = credentials

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup() -> tuple[ConnectionRegistry, Objects, Clock]:
    objects, clock = Objects(), Clock()
    registry = ConnectionRegistry(
        objects,  # type: ignore[arg-type]
        10.0,
        allowed_hosts=("*.svc",),
        recheck_seconds=10.0,
        clock=clock,
        make_client=Client,  # type: ignore[arg-type]
    )
    return registry, objects, clock


def client_for(registry: ConnectionRegistry, **options: Any) -> MilvusRBAC:
    return asyncio.run(registry.client_for("team-a", MILVUS, **options))


def test_a_recently_confirmed_client_is_used_without_reading_again(
    setup: tuple[ConnectionRegistry, Objects, Clock],
) -> None:
    registry, objects, clock = setup
    first = client_for(registry)
    clock.now += 9
    assert client_for(registry) is first
    assert objects.reads == 1


def test_after_the_recheck_interval_a_changed_secret_builds_a_new_client(
    setup: tuple[ConnectionRegistry, Objects, Clock],
) -> None:
    registry, objects, clock = setup
    first = client_for(registry)
    objects.password = "second"
    clock.now += 11
    second = client_for(registry)
    assert second is not first
    assert objects.reads == 2


def test_an_unchanged_connection_keeps_its_client_after_a_recheck(
    setup: tuple[ConnectionRegistry, Objects, Clock],
) -> None:
    registry, objects, clock = setup
    first = client_for(registry)
    clock.now += 11
    assert client_for(registry) is first
    assert objects.reads == 2


def test_invalidate_and_fresh_read_at_once(
    setup: tuple[ConnectionRegistry, Objects, Clock],
) -> None:
    registry, objects, _ = setup
    client_for(registry)
    registry.invalidate(("team-a", "milvus"))
    client_for(registry)
    client_for(registry, fresh=True)
    assert objects.reads == 3


def test_a_vanished_secret_is_noticed_at_the_recheck_unless_deleting(
    setup: tuple[ConnectionRegistry, Objects, Clock],
) -> None:
    registry, objects, clock = setup
    first = client_for(registry)
    objects.secret_exists = False
    clock.now += 11
    with pytest.raises(UnusableConnectionError):
        client_for(registry)
    assert client_for(registry, allow_cached=True) is first


def at_once(registry: ConnectionRegistry, reconciles: int) -> list[Any]:
    """What `reconciles` concurrent client_for calls got: a client or the error raised."""

    async def together() -> list[Any]:
        calls = (registry.client_for("team-a", MILVUS) for _ in range(reconciles))
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(together())


def test_reconciles_due_for_a_recheck_at_once_share_one_read(
    setup: tuple[ConnectionRegistry, Objects, Clock],
) -> None:
    registry, objects, clock = setup
    first = client_for(registry)
    clock.now += 11
    assert all(client is first for client in at_once(registry, 50))
    assert objects.reads == 2


def test_a_shared_recheck_that_fails_fails_every_reconcile_waiting_for_it(
    setup: tuple[ConnectionRegistry, Objects, Clock],
) -> None:
    registry, objects, clock = setup
    client_for(registry)
    objects.secret_exists = False
    clock.now += 11
    assert all(isinstance(found, UnusableConnectionError) for found in at_once(registry, 3))
    assert objects.reads == 2
    objects.secret_exists = True
    client_for(registry)  # the failure is not kept: the next reconcile reads again
    assert objects.reads == 3
