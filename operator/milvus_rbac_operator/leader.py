"""Leader election on a coordination.k8s.io Lease: with several replicas, only the holder acts."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def lease_is_free(
    holder: str | None,
    renewed: datetime.datetime | None,
    duration: float,
    me: str,
    now: datetime.datetime,
) -> bool:
    """Whether `me` may take the lease: nobody holds it, we do, or the holder stopped renewing."""
    if not holder or holder == me or renewed is None:
        return True
    return renewed + datetime.timedelta(seconds=duration) < now


class LeaderLease:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: float,
        renew_seconds: float,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._api = k8s.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew = duration_seconds, renew_seconds
        self._clock = clock

    def _try_hold(self) -> bool:
        """One attempt to take or renew the lease; False when another replica holds it."""
        now = self._clock()
        spec = k8s.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.duration),
            renew_time=now,
            acquire_time=now,
        )
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name=self.name), spec=spec)
            try:
                self._api.create_namespaced_lease(self.namespace, body)
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
            return True
        current = lease.spec or k8s.V1LeaseSpec()
        if not lease_is_free(
            current.holder_identity, current.renew_time, self.duration, self.identity, now
        ):
            return False
        if current.holder_identity == self.identity and current.acquire_time:
            spec.acquire_time = current.acquire_time
        lease.spec = spec
        try:  # replace carries the resourceVersion read above: a racing replica gets a 409
            self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def acquire(self) -> None:
        logged = False
        while True:
            try:
                if await asyncio.to_thread(self._try_hold):
                    logger.info(
                        "leader election: %s holds lease %s/%s",
                        self.identity,
                        self.namespace,
                        self.name,
                    )
                    return
            except ApiException as exc:
                logger.warning("leader election: cannot read or write the lease: %s", exc.reason)
            if not logged:
                logger.info(
                    "leader election: standing by; lease %s/%s is held by another replica",
                    self.namespace,
                    self.name,
                )
                logged = True
            await asyncio.sleep(self.renew)

    async def keep(self, lost: asyncio.Event) -> None:
        """Renew until renewal fails for longer than the lease lasts; then set `lost`."""
        last_renewal = asyncio.get_running_loop().time()
        while not lost.is_set():
            await asyncio.sleep(self.renew)
            try:
                if not await asyncio.to_thread(self._try_hold):
                    logger.error("leader election: another replica took the lease; stopping")
                    lost.set()
                    return
                last_renewal = asyncio.get_running_loop().time()
                continue
            except ApiException as exc:
                logger.warning("leader election: renewal failed: %s", exc.reason)
            if asyncio.get_running_loop().time() - last_renewal > self.duration:
                logger.error("leader election: lease lost; stopping so a standby can take over")
                lost.set()
