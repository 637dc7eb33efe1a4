"""Liveness and readiness over HTTP (for Kubernetes probes), from the operator's own state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from aiohttp import web

from milvus_rbac_operator import metrics


class Health:
    """`/healthz`: the event loop answers. `/readyz`: watching has started (kopf's ready flag).
    `/metrics`: Prometheus metrics (metrics.py).

    Both bodies list each MilvusConnection's last Ready reason. A Milvus outage does not make the
    operator unready: restarting or unrouting it would not help, and status already says so.
    """

    def __init__(
        self, ready: asyncio.Event, connections: Mapping[str, str], standby: bool = False
    ) -> None:
        self._ready = ready
        self._connections = connections
        # A replica waiting for the Lease is healthy and ready to take over: probes must pass,
        # or the kubelet would restart it and a rolling update would never finish.
        self.standby = standby

    def _body(self, state: str) -> str:
        return json.dumps({"status": state, "connections": dict(self._connections)})

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text=self._body("alive"), content_type="application/json")

    async def readyz(self, _: web.Request) -> web.Response:
        if self.standby:
            return web.Response(text=self._body("standby"), content_type="application/json")
        if self._ready.is_set():
            return web.Response(text=self._body("ready"), content_type="application/json")
        return web.Response(
            status=503, text=self._body("starting"), content_type="application/json"
        )

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def serve(self, listen: str) -> web.AppRunner:
        host, _, port = listen.rpartition(":")
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
        return runner
