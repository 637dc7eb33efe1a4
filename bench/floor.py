"""The floor: what any implementation must do for one binding, measured directly.

Create: one AddUserToRole (pymilvus AsyncMilvusClient, with the operator's client settings) and
one status PATCH of a MilvusRoleBinding. Delete: one RemoveUserFromRole and the PATCH that
releases the finalizer of a MilvusRoleBinding being deleted (the API server then deletes it in
the same request). On objects in a namespace of their own (which the operator under
measurement does not watch), removed afterwards: bulk runs before the operator starts, single
units in turns with the operator's single bindings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymilvus import AsyncMilvusClient

from bench.kube import GROUP, VERSION, Kube, binding_path
from bench.milvus_state import Pair
from bench.stats import summarize
from milvus_rbac_operator.devenv.milvus_server import ROOT_PASSWORD, ROOT_USERNAME

NAMESPACE = "bench-floor"
OBJECTS = 100  # status PATCHes go round-robin over this many objects
CONNECTION = "milvus"
TIMEOUT_SECONDS = 10.0  # the operator's default per-call timeout
FINALIZER = "rbac.milvus.io/finalizer"
SETUP_CONCURRENCY = 16  # requests in flight while objects for delete units are made ready


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_status(user: str, role: str, serial: int) -> dict[str, Any]:
    """A status like the operator's after a grant; `serial` makes every write a real change."""
    now = now_rfc3339()
    return {
        "status": {
            "observedGeneration": 1,
            "applied": {"connection": CONNECTION, "username": user, "roleName": role},
            "resStatus": {
                "operation": "AddUserToRole",
                "username": user,
                "roleName": role,
                "code": 0,
                "errorCode": "Success",
                "reason": "",
                "time": now,
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Granted",
                    "message": f"user {user} in role {role} (connection {CONNECTION}) is in place"
                    f" (AddUserToRole({user}, {role}): code 0, errorCode Success) #{serial}",
                    "observedGeneration": 1,
                    "lastTransitionTime": now,
                }
            ],
        }
    }


def binding_object(namespace: str, name: str, user: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MilvusRoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"connectionRef": {"name": CONNECTION}, "username": user, "roleName": role},
    }


def operator_like_client(uri: str) -> AsyncMilvusClient:
    """As milvus_rbac_operator.milvus.MilvusRBAC builds its client (no TLS, no database)."""
    return AsyncMilvusClient(
        uri=uri,
        token=f"{ROOT_USERNAME}:{ROOT_PASSWORD}",
        db_name="",
        timeout=TIMEOUT_SECONDS,
        dedicated=True,
    )


@dataclass
class Timings:
    """Per unit: the whole unit, its Milvus RPC, its API write (seconds)."""

    unit: list[float] = field(default_factory=list)
    rpc: list[float] = field(default_factory=list)
    write: list[float] = field(default_factory=list)

    def extend(self, other: Timings) -> None:
        self.unit += other.unit
        self.rpc += other.rpc
        self.write += other.write

    def as_json(self) -> dict[str, Any]:
        return {
            name: (s.as_json() if (s := summarize(values)) else None)
            for name, values in (("unit", self.unit), ("rpc", self.rpc), ("write", self.write))
        }


@dataclass
class BulkFloor:
    """N create units then N delete units, `concurrency` in flight."""

    concurrency: int
    create_seconds: float
    delete_seconds: float
    create: Timings
    delete: Timings

    def as_json(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "create_seconds": self.create_seconds,
            "delete_seconds": self.delete_seconds,
            "create": self.create.as_json(),
            "delete": self.delete.as_json(),
        }


@dataclass
class FloorResult:
    create: Timings = field(default_factory=Timings)
    delete: Timings = field(default_factory=Timings)
    # size -> one run per concurrency tried; the floor is the fastest of them.
    bulk: dict[int, list[BulkFloor]] = field(default_factory=dict)

    def best(self, size: int, create: bool) -> BulkFloor:
        runs = self.bulk[size]
        return min(runs, key=lambda r: r.create_seconds if create else r.delete_seconds)

    def as_json(self) -> dict[str, Any]:
        return {
            "create": self.create.as_json(),
            "delete": self.delete.as_json(),
            "bulk_create_seconds": {str(n): self.best(n, True).create_seconds for n in self.bulk},
            "bulk_create_concurrency": {str(n): self.best(n, True).concurrency for n in self.bulk},
            "bulk_delete_seconds": {str(n): self.best(n, False).delete_seconds for n in self.bulk},
            "bulk_delete_concurrency": {str(n): self.best(n, False).concurrency for n in self.bulk},
            "bulk_runs": {str(n): [r.as_json() for r in runs] for n, runs in self.bulk.items()},
            "samples_ms": {
                "create": [round(v * 1000, 3) for v in self.create.unit],
                "delete": [round(v * 1000, 3) for v in self.delete.unit],
            },
        }


class Floor:
    """The floor's units, on objects of NAMESPACE and with the operator's Milvus client settings.

    `async with Floor(...) as floor:` makes the objects ready and warms the client (the
    operator's connections are open long before a binding arrives); on exit what is left is
    removed. Bulk runs come first (`measure_bulk`), before the operator starts; single units
    are taken in turns with the operator's single bindings (`single_create`, `single_delete`),
    so that both meet the machine in the same minute.
    """

    def __init__(self, kube: Kube, milvus_uri: str, single_pairs: Sequence[Pair]) -> None:
        self._kube = kube
        self._uri = milvus_uri
        self.single_pairs = list(single_pairs)
        self.result = FloorResult()
        self._serial = 0
        self._client: AsyncMilvusClient | None = None
        # Objects being deleted and held by a finalizer: one per delete unit, by unit index.
        self._doomed: list[str] = []

    async def __aenter__(self) -> Floor:
        try:
            await self.prepare()
            self._client = operator_like_client(self._uri)
            await self._client.get_server_version(timeout=TIMEOUT_SECONDS)
            warm = self.single_pairs[:5]
            await self.sequential(self.create_unit, warm)
            await self.doom(len(warm))
            await self.sequential(self.delete_unit, warm)
        except BaseException:
            await self.__aexit__()  # `async with` calls it only once this returned
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self.release_all()

    @property
    def client(self) -> AsyncMilvusClient:
        assert self._client is not None, "use the floor inside `async with`"
        return self._client

    def _object_name(self, index: int) -> str:
        return f"floor-{index % OBJECTS:03d}"

    async def doom(self, count: int) -> None:
        """`count` objects with a finalizer and a granted status, each DELETEd: what a delete
        unit then releases.

        Untimed set-up: in the operator's case the user's DELETE is part of delete -> gone. The
        status is there because any implementation recorded the grant on create, and the API
        server's release of an object with a status costs more (about 1.5 ms here).
        """
        names = [f"floor-d{self._serial}-{i:05d}" for i in range(count)]
        self._serial += 1
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def one(name: str) -> None:
            held = binding_object(NAMESPACE, name, "floor", "floor")
            held["metadata"]["finalizers"] = [FINALIZER]
            async with gate:
                await self._kube.create_binding(held)
                await self._kube.patch_binding(
                    NAMESPACE, name, floor_status("floor", "floor", 0), "status"
                )
                await self._kube.delete_binding(NAMESPACE, name)

        await asyncio.gather(*(one(name) for name in names))
        self._doomed = names

    async def release_all(self) -> None:
        """Remove what is left: the finalizers the admission policy gave the create units'
        objects, then the objects."""
        listing = await self._kube.call("GET", binding_path(NAMESPACE))
        for item in listing.get("items") or []:
            if item["metadata"].get("finalizers"):
                name = item["metadata"]["name"]
                release = {"metadata": {"finalizers": None}}
                await self._kube.call(
                    "PATCH",
                    binding_path(NAMESPACE, name),
                    release,
                    content_type="application/merge-patch+json",
                    ok=(200, 404),
                )
        await self._kube.delete_all_bindings(NAMESPACE)

    async def prepare(self) -> None:
        await self._kube.apply_core(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        )
        for index in range(OBJECTS):
            name = self._object_name(index)
            await self._kube.call(
                "POST",
                binding_path(NAMESPACE),
                binding_object(NAMESPACE, name, "floor", "floor"),
                ok=(201, 409),
            )

    async def create_unit(self, index: int, pair: Pair) -> Timings:
        self._serial += 1
        user, role = pair
        started = time.monotonic()
        await self.client.grant_role(user, role, timeout=TIMEOUT_SECONDS)
        granted = time.monotonic()
        await self._kube.patch_binding(
            NAMESPACE, self._object_name(index), floor_status(user, role, self._serial), "status"
        )
        done = time.monotonic()
        return Timings([done - started], [granted - started], [done - granted])

    async def delete_unit(self, index: int, pair: Pair) -> Timings:
        self._serial += 1
        user, role = pair
        started = time.monotonic()
        await self.client.revoke_role(user, role, timeout=TIMEOUT_SECONDS)
        revoked = time.monotonic()
        release = {"metadata": {"finalizers": None}}
        await self._kube.patch_binding(NAMESPACE, self._doomed[index], release)
        done = time.monotonic()
        return Timings([done - started], [revoked - started], [done - revoked])

    async def sequential(
        self, unit: Callable[[int, Pair], Awaitable[Timings]], pairs: Sequence[Pair]
    ) -> Timings:
        total = Timings()
        for index, pair in enumerate(pairs):
            total.extend(await unit(index, pair))
        return total

    async def concurrent(
        self,
        unit: Callable[[int, Pair], Awaitable[Timings]],
        pairs: Sequence[Pair],
        concurrency: int,
    ) -> tuple[float, Timings]:
        """Seconds for all units with `concurrency` in flight, and each unit's timings."""
        gate = asyncio.Semaphore(concurrency)
        total = Timings()

        async def one(index: int, pair: Pair) -> None:
            async with gate:
                total.extend(await unit(index, pair))

        started = time.monotonic()
        await asyncio.gather(*(one(i, p) for i, p in enumerate(pairs)))
        return time.monotonic() - started, total

    async def measure_bulk(
        self,
        bulk: dict[int, Sequence[Pair]],
        concurrencies: Sequence[int],
        say: Callable[[str], None],
    ) -> None:
        # On a loaded 2-core machine more requests in flight can be slower than one at a time,
        # so each size is measured at every concurrency and the fastest is the floor.
        for size, pairs in bulk.items():
            self.result.bulk[size] = []
            for concurrency in concurrencies:
                created, create = await self.concurrent(self.create_unit, pairs, concurrency)
                await self.doom(len(pairs))
                deleted, delete = await self.concurrent(self.delete_unit, pairs, concurrency)
                self.result.bulk[size].append(
                    BulkFloor(concurrency, created, deleted, create, delete)
                )
                say(
                    f"  floor x{size}, {concurrency} in flight: {created:.2f} s to grant, "
                    f"{deleted:.2f} s to revoke"
                )

    async def single_create(self, index: int) -> None:
        """The `index`th create unit of the single phase (its own pair, its own object)."""
        self.result.create.extend(await self.create_unit(index, self.single_pairs[index]))

    async def prepare_single_deletes(self) -> None:
        await self.doom(len(self.single_pairs))

    async def single_delete(self, index: int) -> None:
        """The `index`th delete unit: revokes what `single_create(index)` granted."""
        self.result.delete.extend(await self.delete_unit(index, self.single_pairs[index]))
