"""The benchmark's own API-server client: aiohttp with the admin client certificate.

It counts its own writes, so that the operator's share of apiserver_request_total can be told
apart, and it watches MilvusRoleBindings to time when each becomes Ready or disappears.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.promtext import apiserver_reads, apiserver_writes, write_key

GROUP, VERSION = "rbac.milvus.io", "v1alpha1"
BINDINGS = "milvusrolebindings"


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class KubeAccess:
    """Server and client-certificate identity, from a kubeconfig with file references."""

    server: str
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeAccess:
        config = yaml.safe_load(path.read_text())
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
        user = next(u for u in config["users"] if u["name"] == context["context"]["user"])
        return cls(
            server=cluster["cluster"]["server"],
            ca=Path(cluster["cluster"]["certificate-authority"]),
            cert=Path(user["user"]["client-certificate"]),
            key=Path(user["user"]["client-key"]),
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def binding_path(namespace: str, name: str = "", subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{BINDINGS}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class Kube:
    """Keep-alive HTTPS to kube-apiserver; `own_writes` counts what this client wrote."""

    def __init__(self, access: KubeAccess, connections: int = 64) -> None:
        self.access = access
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.own_writes: Counter[str] = Counter()
        self.own_reads: Counter[str] = Counter()

    async def __aenter__(self) -> Kube:
        connector = aiohttp.TCPConnector(ssl=self.access.ssl_context(), limit=self._connections)
        self._session = aiohttp.ClientSession(
            self.access.server, connector=connector, timeout=aiohttp.ClientTimeout(total=120)
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Kube(...)`"
        return self._session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        counted_as: tuple[str, str, str] | None = None,
        ok: Iterable[int] = (200, 201, 202),
    ) -> Any:
        """One request; `counted_as` = (resource, subresource, verb) when it is a counted write."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        if counted_as is not None:
            self.own_writes[write_key(*counted_as)] += 1
        async with self.session.request(method, path, data=data, headers=headers) as resp:
            text = await resp.text()
            if resp.status not in tuple(ok):
                raise KubeError(resp.status, text[:500])
            return json.loads(text) if text else None

    async def create_binding(self, obj: dict[str, Any]) -> Any:
        namespace = obj["metadata"]["namespace"]
        return await self.call(
            "POST", binding_path(namespace), obj, counted_as=(BINDINGS, "", "POST")
        )

    async def patch_binding(
        self, namespace: str, name: str, patch: dict[str, Any], subresource: str = ""
    ) -> Any:
        return await self.call(
            "PATCH",
            binding_path(namespace, name, subresource),
            patch,
            content_type="application/merge-patch+json",
            counted_as=(BINDINGS, subresource, "PATCH"),
        )

    async def delete_binding(self, namespace: str, name: str) -> Any:
        return await self.call(
            "DELETE", binding_path(namespace, name), counted_as=(BINDINGS, "", "DELETE")
        )

    async def delete_all_bindings(self, namespace: str) -> Any:
        return await self.call(
            "DELETE", binding_path(namespace), counted_as=(BINDINGS, "", "DELETECOLLECTION")
        )

    async def apply_core(self, path: str, obj: dict[str, Any]) -> Any:
        """Create, or leave as it is when it already exists (namespaces, Secrets, connections)."""
        return await self.call("POST", path, obj, ok=(200, 201, 202, 409))

    async def get(self, path: str, resource: str = "") -> Any:
        """A GET; `resource` names it when it is one of the reads the benchmark counts."""
        if resource:
            self.own_reads[write_key(resource, "", "GET")] += 1
        return await self.call("GET", path, ok=(200, 404))

    async def apiserver_requests(self) -> tuple[dict[str, float], dict[str, float]]:
        """(writes, reads) so far, from kube-apiserver's own /metrics."""
        async with self.session.get("/metrics") as resp:
            text = await resp.text()
            if resp.status != 200:
                raise KubeError(resp.status, text[:500])
        return apiserver_writes(text), apiserver_reads(text)


def ready_generation(obj: dict[str, Any]) -> tuple[int, str] | None:
    """(generation, reason) when Ready is True for the object's current generation."""
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "Ready"
            and condition.get("status") == "True"
            and int(condition.get("observedGeneration") or -1) == generation
        ):
            return generation, str(condition.get("reason") or "")
    return None


class Tracker:
    """When each item was first seen, and waiters for sets of items."""

    def __init__(self) -> None:
        self.at: dict[Hashable, float] = {}
        self._waiters: list[tuple[set[Hashable], asyncio.Event]] = []

    def record(self, item: Hashable, when: float) -> None:
        if item in self.at:
            return
        self.at[item] = when
        for pending, event in self._waiters:
            if item in pending:
                pending.discard(item)
                if not pending:
                    event.set()

    async def wait(
        self, items: Iterable[Hashable], timeout: float, alive: Callable[[], bool] = lambda: True
    ) -> bool:
        """True once every item was seen; False on timeout or when `alive` says to give up."""
        pending = {i for i in items if i not in self.at}
        if not pending:
            return True
        event = asyncio.Event()
        entry = (pending, event)
        self._waiters.append(entry)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(event.wait(), min(1.0, deadline - time.monotonic()))
                    return True
                except TimeoutError:
                    if not alive():
                        return False
            return event.is_set()
        finally:
            self._waiters.remove(entry)

    def latest(self, items: Iterable[Hashable]) -> float | None:
        times = [self.at[i] for i in items if i in self.at]
        return max(times) if times else None


Key = str  # "namespace/name"


class BindingWatch:
    """A watch on the MilvusRoleBindings of `namespace`; times are time.monotonic() at
    receipt."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self._kube = kube
        self._namespace = namespace
        self.ready = Tracker()  # (key, generation)
        self.reasons = Tracker()  # (key, reason) of a Ready=True condition of the current gen
        self.deleted = Tracker()  # key
        self.events = 0
        self.listed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        path = binding_path(self._namespace)
        version: str | None = None
        while True:
            try:
                if version is None:
                    self._kube.own_reads[write_key(BINDINGS, "", "LIST")] += 1
                    listing = await self._kube.call("GET", path)
                    now = time.monotonic()
                    for item in listing.get("items") or []:
                        self._seen("ADDED", item, now)
                    version = str(listing["metadata"]["resourceVersion"])
                    self.listed.set()
                version = await self._stream(path, version)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, KubeError, ValueError):
                await asyncio.sleep(0.5)

    async def _stream(self, path: str, version: str) -> str | None:
        """Follow the watch until the server ends it; the version to resume from (None: relist)."""
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": "1800",
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._kube.session.get(path, params=query, timeout=timeout) as resp:
            if resp.status != 200:
                raise KubeError(resp.status, (await resp.text())[:500])
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                now = time.monotonic()
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        return None if obj.get("code") == 410 else version  # 410: too old
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self._seen(str(kind), obj, now)
        return version

    def _seen(self, kind: str, obj: dict[str, Any], now: float) -> None:
        self.events += 1
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if kind == "DELETED":
            self.deleted.record(key, now)
            return
        found = ready_generation(obj)
        if found is not None:
            generation, reason = found
            self.ready.record((key, generation), now)
            self.reasons.record((key, reason), now)
