"""How the operator's own writes use their connections.

A local HTTP server stands in for the API server. It can hold every PATCH until told to answer,
so a test can look at what the waiting writes hold while they wait.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kubernetes
import pytest
from aiohttp import web

from milvus_rbac_operator import kubeclient
from milvus_rbac_operator.kubeclient import EventPoster, KubeWriter


@dataclass
class Server:
    """What the stand-in API server saw."""

    answer_size: int = 100
    answer: asyncio.Event = field(default_factory=asyncio.Event)
    busy_at: int = 0  # `busy` is set once this many PATCHes are held at once
    busy: asyncio.Event = field(default_factory=asyncio.Event)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    peers: set[Any] = field(default_factory=set)
    in_flight: int = 0
    most_in_flight: int = 0
    port: int = 0
    # path -> the status codes of its next answers (then 200)
    statuses: dict[str, list[int]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight == self.busy_at:
            self.busy.set()
        body = await request.json()
        await self.answer.wait()
        self.in_flight -= 1
        scripted = self.statuses.get(request.path)
        if scripted:
            return web.json_response({"message": "no"}, status=scripted.pop(0))
        self.bodies.append(body)
        self.paths.append(request.path)
        return web.json_response({"data": "x" * self.answer_size})

    def patcher(self, turns: int = 16) -> KubeWriter:
        def login() -> kubernetes.client.Configuration:
            configuration = kubernetes.client.Configuration()
            configuration.host = f"http://127.0.0.1:{self.port}"
            return configuration

        return KubeWriter(login, max_connections=turns)


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[Server]:
    app = web.Application()
    app.router.add_patch("/{tail:.*}", server.handle)
    app.router.add_post("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


def requests_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, aiohttp.ClientRequest))


def test_writes_beyond_the_bound_wait_without_a_request_and_all_land() -> None:
    async def patch_many() -> tuple[Server, int]:
        async with serving(Server(busy_at=3)) as server:
            patcher = server.patcher(turns=3)
            try:
                sent = [
                    asyncio.create_task(patcher.merge_patch(f"/objects/{i}", {"n": i}))
                    for i in range(40)
                ]
                await asyncio.wait_for(server.busy.wait(), 10)
                await asyncio.sleep(0.05)  # every other write reaches the point where it waits
                alive = requests_alive()
                server.answer.set()
                await asyncio.gather(*sent)
            finally:
                await patcher.close()
        return server, alive

    server, alive = asyncio.run(patch_many())

    assert server.most_in_flight == 3
    assert alive == 3  # the 37 waiting writes hold no request of their own
    assert sorted(b["n"] for b in server.bodies) == list(range(40))


def test_writes_reuse_one_connection_however_large_the_answer() -> None:
    async def patch_in_turn(answer_size: int) -> Server:
        async with serving(Server(answer_size=answer_size)) as server:
            server.answer.set()
            patcher = server.patcher()
            try:
                for i in range(10):
                    await patcher.merge_patch("/objects/o", {"n": i})
            finally:
                await patcher.close()
        return server

    for answer_size in (100, 300_000):
        server = asyncio.run(patch_in_turn(answer_size))
        assert len(server.bodies) == 10
        assert len(server.peers) == 1, f"{len(server.peers)} connections, answers of {answer_size}"


BINDING = {
    "apiVersion": "rbac.milvus.io/v1alpha1",
    "kind": "MilvusRoleBinding",
    "metadata": {"name": "alice-reader", "namespace": "team-a", "uid": "u-1"},
}
CLUSTER_CONNECTION = {
    "apiVersion": "rbac.milvus.io/v1alpha1",
    "kind": "ClusterMilvusConnection",
    "metadata": {"name": "shared", "uid": "u-2"},
}


def poster(server: Server, turns: int = 2) -> EventPoster:
    return EventPoster(server.patcher(turns), "milvus-rbac-operator", "pod-1", "mrbo-system")


async def settled(events: EventPoster, grace: float = 10) -> None:
    await events.close(grace)


def test_events_go_out_a_few_at_a_time_behind_their_own_connections_and_all_arrive() -> None:
    async def post_many() -> Server:
        async with serving(Server(busy_at=2)) as server:
            events = poster(server, turns=2)
            for i in range(20):
                events.post(BINDING, "Normal", "Granted", f"grant {i}")
            await asyncio.wait_for(server.busy.wait(), 10)
            await asyncio.sleep(0.05)
            server.answer.set()
            await settled(events)
        return server

    server = asyncio.run(post_many())
    assert server.most_in_flight == 2
    assert sorted(b["message"] for b in server.bodies) == sorted(f"grant {i}" for i in range(20))


def test_an_event_names_its_object_and_one_about_a_cluster_object_goes_to_the_operators() -> None:
    async def post_two() -> Server:
        async with serving(Server()) as server:
            server.answer.set()
            events = poster(server)
            events.post(BINDING, "Normal", "Granted", "x" * 5000)
            events.post(CLUSTER_CONNECTION, "Warning", "Unauthenticated", "rejected")
            await settled(events)
        return server

    server = asyncio.run(post_two())
    by_reason = {b["reason"]: (p, b) for p, b in zip(server.paths, server.bodies, strict=True)}
    path, granted = by_reason["Granted"]
    assert path == "/api/v1/namespaces/team-a/events"
    assert granted["involvedObject"] == {
        "apiVersion": "rbac.milvus.io/v1alpha1",
        "kind": "MilvusRoleBinding",
        "name": "alice-reader",
        "uid": "u-1",
        "namespace": "team-a",
    }
    assert (granted["type"], granted["source"]) == ("Normal", {"component": "milvus-rbac-operator"})
    assert granted["metadata"]["generateName"] == "alice-reader."
    assert len(granted["message"]) <= kubeclient.EVENT_MESSAGE_LIMIT
    path, warning = by_reason["Unauthenticated"]
    assert path == "/api/v1/namespaces/mrbo-system/events"
    assert warning["involvedObject"]["namespace"] == "mrbo-system"


def test_an_event_refused_is_dropped_and_one_the_server_could_not_take_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kubeclient, "EVENT_RETRY_DELAYS", (0.01, 0.01))

    async def post_both() -> Server:
        async with serving(Server()) as server:
            server.answer.set()
            # A terminating namespace refuses new objects; an overloaded server answers 503.
            server.statuses["/api/v1/namespaces/gone/events"] = [403, 403, 403]
            server.statuses["/api/v1/namespaces/team-a/events"] = [503, 429]
            events = poster(server)
            refused = {**BINDING, "metadata": {"name": "b", "namespace": "gone", "uid": "u"}}
            events.post(refused, "Normal", "Revoked", "r")
            events.post(BINDING, "Normal", "Granted", "g")
            await settled(events)
        return server

    server = asyncio.run(post_both())
    assert server.paths == ["/api/v1/namespaces/team-a/events"]  # after two retries
    assert server.statuses["/api/v1/namespaces/gone/events"] == [403, 403]  # tried once


def test_closing_stops_after_the_grace_and_says_how_many_were_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def close_early() -> int:
        async with serving(Server()) as server:  # never answers
            events = poster(server, turns=1)
            for i in range(3):
                events.post(BINDING, "Normal", "Granted", f"{i}")
            await asyncio.sleep(0.05)
            await events.close(0.1)
            posted = len(server.bodies)
            server.answer.set()  # let the held request end, so the server stops at once
            return posted

    assert asyncio.run(close_early()) == 0
    assert "3 Events not posted before the operator stopped" in caplog.text
