"""Grants several bindings want: who still holds one, and one call at a time on each.

One lock per grant site (Milvus endpoint, username, roleName), held around each call on it.
Two bindings may want the same grant. Without a lock, one binding's removal (decided from the
live view) could reach Milvus just after another binding's add of the same grant, and the grant
would be gone while the other binding shows Ready. Under the lock, a removal decides who still
wants the grant right before it is made, and an add waits until that removal is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from milvus_rbac_operator.inventory import LiveObjects, Sharers
from milvus_rbac_operator.model import RolePair
from milvus_rbac_operator.reconcile import removal_may_wait

# kopf hands a watch event to a new object's worker through its scheduler, some event-loop cycles
# later than to an object whose worker is alive. A binding created just before another's
# deletion (a rename: apply the new, prune the old) is in the live view within a few cycles;
# measured: 3 were enough, so 10 leave a margin, and idle cycles take microseconds.
WATCH_DISPATCH_CYCLES = 10


class PairLocks:
    """Locks exist only while someone holds or waits for them: 10,000 bindings keep none idle."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, site: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(site) or (asyncio.Lock(), 0)
        self._locks[site] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._locks[site][1] - 1
            if users:
                self._locks[site] = (lock, users)
            else:
                del self._locks[site]

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(frozen=True)
class LiveSharing:
    """reconcile.SharedGrants for one binding, answered from the live view."""

    locks: PairLocks
    live: LiveObjects
    namespace: str
    uid: str
    retry: int = 0  # the handler's retry: a removal waits for others only so many times

    def serialized(self, pair: RolePair) -> AbstractAsyncContextManager[object]:
        return self.locks.hold(self.live.grant_site(pair, self.namespace))

    async def caught_up(self) -> None:
        for _ in range(WATCH_DISPATCH_CYCLES):
            await asyncio.sleep(0)

    def sharers(self, pair: RolePair) -> Sharers:
        found = self.live.sharers(pair, self.namespace, self.uid)
        return found if removal_may_wait(self.retry) else Sharers(holding=found.holding)

    def adding(self, pair: RolePair) -> None:
        self.live.note_adding(self.uid, pair)
