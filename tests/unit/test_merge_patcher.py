"""The operator's own writes wait for their turn before a request is built.

A local HTTP server stands in for the API server: it holds every PATCH until told to answer, so
the test can look at what the waiting writes hold while they wait.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiohttp
import kubernetes
from aiohttp import web

from milvus_rbac_operator.kubeclient import MergePatcher


def requests_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, aiohttp.ClientRequest))


async def patch_many(writes: int, turns: int) -> tuple[int, int, list[dict[str, Any]]]:
    """(most PATCHes the server held at once, ClientRequests alive meanwhile, bodies received)."""
    answer = asyncio.Event()
    every_turn_taken = asyncio.Event()
    held: list[int] = []
    bodies: list[dict[str, Any]] = []
    in_flight = 0

    async def patch(request: web.Request) -> web.Response:
        nonlocal in_flight
        in_flight += 1
        held.append(in_flight)
        bodies.append(await request.json())
        if in_flight == turns:
            every_turn_taken.set()
        await answer.wait()
        in_flight -= 1
        return web.json_response({})

    app = web.Application()
    app.router.add_patch("/{tail:.*}", patch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    def login() -> kubernetes.client.Configuration:
        configuration = kubernetes.client.Configuration()
        configuration.host = f"http://127.0.0.1:{port}"
        return configuration

    patcher = MergePatcher(login, max_connections=turns)
    try:
        sent = [
            asyncio.create_task(patcher.merge_patch(f"/objects/{i}", {"n": i}))
            for i in range(writes)
        ]
        await asyncio.wait_for(every_turn_taken.wait(), 10)
        await asyncio.sleep(0.05)  # let every other write reach the point where it waits
        alive = requests_alive()
        answer.set()
        await asyncio.gather(*sent)
        return max(held), alive, bodies
    finally:
        await patcher.close()
        await runner.cleanup()


def test_writes_beyond_the_bound_wait_without_a_request_and_all_land() -> None:
    most_at_once, alive, bodies = asyncio.run(patch_many(writes=40, turns=3))

    assert most_at_once == 3
    assert alive == 3  # the 37 waiting writes hold no request of their own
    assert sorted(b["n"] for b in bodies) == list(range(40))
