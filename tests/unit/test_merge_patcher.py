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
from aiohttp import web

from milvus_rbac_operator.kubeclient import MergePatcher


@dataclass
class Server:
    """What the stand-in API server saw."""

    answer_size: int = 100
    answer: asyncio.Event = field(default_factory=asyncio.Event)
    busy_at: int = 0  # `busy` is set once this many PATCHes are held at once
    busy: asyncio.Event = field(default_factory=asyncio.Event)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    peers: set[Any] = field(default_factory=set)
    in_flight: int = 0
    most_in_flight: int = 0
    port: int = 0

    async def patch(self, request: web.Request) -> web.Response:
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight == self.busy_at:
            self.busy.set()
        self.bodies.append(await request.json())
        await self.answer.wait()
        self.in_flight -= 1
        return web.json_response({"data": "x" * self.answer_size})

    def patcher(self, turns: int = 16) -> MergePatcher:
        def login() -> kubernetes.client.Configuration:
            configuration = kubernetes.client.Configuration()
            configuration.host = f"http://127.0.0.1:{self.port}"
            return configuration

        return MergePatcher(login, max_connections=turns)


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[Server]:
    app = web.Application()
    app.router.add_patch("/{tail:.*}", server.patch)
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
