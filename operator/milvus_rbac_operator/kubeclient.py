"""How the operator logs in to Kubernetes: kubeconfig (explicit or $KUBECONFIG) or in-cluster."""

from __future__ import annotations

import asyncio
import collections
import datetime
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec

import aiohttp
import kopf
import kubernetes
import urllib3

# kopf's namespace matcher is not exported; using it keeps start-up listing and watching equal.
from kopf._cogs.structs.references import NamespaceName, match_namespace
from kubernetes.client.exceptions import ApiException

P = ParamSpec("P")
logger = logging.getLogger(__name__)

# Objects per LIST page, for kopf's listings and the operator's own: a page is what is held at
# once while a listing is read.
LIST_PAGE_SIZE = 100


def load_configuration(kubeconfig: str | None) -> kubernetes.client.Configuration:
    """Read fresh each time: in-cluster tokens rotate, and kopf logs in again on a 401."""
    configuration = kubernetes.client.Configuration()
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    return configuration


def connection_info(
    configuration: kubernetes.client.Configuration, default_namespace: str | None = None
) -> kopf.ConnectionInfo:
    """The same identity for kopf's own API client as for ours.

    `default_namespace` is where kopf posts Events about cluster-scoped objects.
    """
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        default_namespace=default_namespace,
    )


def api_session(
    info: kopf.ConnectionInfo,
    max_connections: int,
    timeout: aiohttp.ClientTimeout | None = None,
) -> aiohttp.ClientSession:
    """An aiohttp session to the API server as `info`'s identity, with at most that many
    connections."""
    connector = aiohttp.TCPConnector(limit=max_connections, ssl=info.as_ssl_context())
    if timeout is None:
        return aiohttp.ClientSession(connector=connector, headers=info.as_http_headers())
    return aiohttp.ClientSession(
        connector=connector, headers=info.as_http_headers(), timeout=timeout
    )


def bounded_session(info: kopf.ConnectionInfo, max_connections: int) -> kopf.AiohttpSession:
    """kopf's API session, with a bound on its connections to the API server.

    kopf's own session has none: resuming thousands of bindings opened as many TLS connections
    at once, and each kept about 200 KB (buffers, OpenSSL) for as long as it stayed pooled.
    Watch streams hold a connection each, so the bound leaves room for all of them.
    """
    session = api_session(info, max_connections)
    return kopf.AiohttpSession(
        server=info.server, default_namespace=info.default_namespace, aiohttp_session=session
    )


class KubeWriter:
    """Writes from the event loop: the PATCH before an add, annotations, Events.

    The kubernetes client is synchronous: run in a thread, each write also took the GIL from
    the event loop (13% of its time went to that in a bulk rollout). Errors are raised as the
    kubernetes client's ApiException, so callers handle both alike.
    """

    def __init__(
        self,
        load_configuration: Callable[[], kubernetes.client.Configuration],
        max_connections: int = 16,
        timeout_seconds: float = 30,
    ) -> None:
        self._load_configuration = load_configuration
        self.max_connections = max_connections
        # No total: the server must answer within the bound once a write is sent, however long
        # the write waited for its turn before (thousands at once in a bulk rollout).
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout_seconds, sock_read=timeout_seconds
        )
        self._session: tuple[str, aiohttp.ClientSession] | None = None
        # A write waits for its turn here, before its request exists: thousands of writes that
        # each waited inside aiohttp for a pooled connection held a whole request apiece
        # (headers, URL, cookies, a dozen coroutines), the peak that a burst's memory stays at.
        self._turns = asyncio.Semaphore(max_connections)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> None:
        async with self._turns:
            await self._send("PATCH", path, body, "application/merge-patch+json")

    async def create(self, path: str, body: dict[str, Any]) -> None:
        async with self._turns:
            await self._send("POST", path, body, "application/json")

    async def _send(self, method: str, path: str, body: dict[str, Any], content_type: str) -> None:
        for attempt in (1, 2):
            server, session = self._current_session()
            async with session.request(
                method, server + path, json=body, headers={"Content-Type": content_type}
            ) as response:
                if response.status == 401 and attempt == 1:
                    await self.close()  # a rotated token: log in again, once
                    continue
                if response.status >= 400:
                    detail = (await response.text())[:500]
                    raise ApiException(
                        status=response.status, reason=f"{response.reason}: {detail}"
                    )
                # Read to the end: an answer left unread closes its connection, and the next
                # write paid a new TLS handshake (most writes, for objects over about 8 KB).
                await response.read()
                return

    def _current_session(self) -> tuple[str, aiohttp.ClientSession]:
        if self._session is None or self._session[1].closed:
            info = connection_info(self._load_configuration())
            session = api_session(info, self.max_connections, self._timeout)
            self._session = (str(info.server).rstrip("/"), session)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session[1], None
            await session.close()


# kopf's limit: longer messages are refused by some API servers.
EVENT_MESSAGE_LIMIT = 1024
# Attempts of an Event the API server could not take (429, 5xx, no answer); others are dropped.
EVENT_RETRY_DELAYS = (0.5, 2.0)


class EventPoster:
    """core/v1 Events, posted a few at a time through connections of their own.

    kopf posts each object's Events at once, on the connections its status writes use: in a
    burst of thousands of grants, half the API server's writes were Events, and bindings waited
    for their status write behind them, each holding its memory (RSS after 10,000 at once went
    over 300 MB). Here an Event waits in a queue, a few hundred bytes, and the status comes
    first; in a burst the Events lag, and they never fail or delay a reconcile.
    """

    def __init__(
        self,
        writer: KubeWriter,
        component: str,
        instance: str,
        default_namespace: str,
        max_pending: int = 50_000,
    ) -> None:
        self._writer = writer
        self._component, self._instance = component, instance
        self._default_namespace = default_namespace
        self._pending: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(
            maxlen=max_pending
        )
        self._workers: set[asyncio.Task[None]] = set()
        self._concurrency = writer.max_connections
        self.dropped = 0

    def post(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """Queue an Event about `obj` (a binding or connection body); never blocks or fails."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # the oldest goes: a burst far beyond what the API server takes
        namespace, event = self._event(obj, event_type, reason, message)
        self._pending.append((f"/api/v1/namespaces/{namespace}/events", event))
        while len(self._workers) < min(self._concurrency, len(self._pending)):
            worker = asyncio.get_running_loop().create_task(self._drain())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    def _event(
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> tuple[str, dict[str, Any]]:
        meta = obj.get("metadata") or {}
        # Cluster-scoped objects' Events go to the operator's namespace, as kopf's did.
        namespace = str(meta.get("namespace") or self._default_namespace)
        involved = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "namespace": namespace,
        }
        if len(message) > EVENT_MESSAGE_LIMIT:
            half = EVENT_MESSAGE_LIMIT // 2 - 2
            message = f"{message[:half]}...{message[-half:]}"
        now = datetime.datetime.now(datetime.UTC)
        event = {
            "metadata": {
                "generateName": f"{str(meta.get('name') or 'object')[:200]}.",
                "namespace": namespace,
            },
            "involvedObject": {k: v for k, v in involved.items() if v},
            "type": event_type,
            "reason": reason,
            "message": message,
            "action": reason,
            "source": {"component": self._component},  # `kubectl describe`'s From column
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "count": 1,
        }
        return namespace, event

    async def _drain(self) -> None:
        while self._pending:
            path, event = self._pending.popleft()
            await self._post_one(path, event)

    async def _post_one(self, path: str, event: dict[str, Any]) -> None:
        for delay in (*EVENT_RETRY_DELAYS, None):
            try:
                await self._writer.create(path, event)
                return
            except ApiException as exc:
                retriable = exc.status is None or exc.status == 429 or exc.status >= 500
                problem = f"HTTP {exc.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                retriable, problem = True, type(exc).__name__
            if not retriable or delay is None:
                logger.warning(
                    "Event %s about %s not posted: %s",
                    event["reason"],
                    event["involvedObject"].get("name"),
                    problem,
                )
                return
            await asyncio.sleep(delay)

    async def close(self, grace_seconds: float) -> None:
        """Post what is queued for at most `grace_seconds`, then stop."""
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=grace_seconds)
        left = len(self._pending) + len(self._workers)
        for worker in list(self._workers):
            worker.cancel()
        if left:
            logger.warning("%d Events not posted before the operator stopped", left)
        await self._writer.close()


def api_connections_needed(namespaces: tuple[str, ...], for_requests: int = 32) -> int:
    """Connections for every watch stream kopf opens, plus `for_requests` for the rest."""
    # Cluster-wide: bindings, connections, cluster connections, namespaces, CRDs. Per namespace:
    # bindings and connections (a glob may select many; leave room for 16 each).
    per_namespace = sum(16 if any(c in ns for c in "*?[!") else 1 for ns in namespaces)
    return for_requests + 5 + 2 * per_namespace


def served_namespaces(patterns: Iterable[str], existing: Iterable[str]) -> list[str]:
    """The namespaces that `-n` patterns (names or kopf's globs) select among `existing`.

    kopf's own matcher, so that what is listed at start-up is exactly what kopf then watches.
    """
    patterns = list(patterns)
    return [
        name
        for name in existing
        if any(match_namespace(NamespaceName(name), pattern) for pattern in patterns)
    ]


def temporary_on_api_outage(
    handler: Callable[P, Awaitable[None]],
) -> Callable[P, Awaitable[None]]:
    """An API server that is down or overloaded is a retry soon, not a traceback in the log."""

    @functools.wraps(handler)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await handler(*args, **kwargs)
        except (TimeoutError, urllib3.exceptions.HTTPError, aiohttp.ClientError) as exc:
            raise kopf.TemporaryError(f"Kubernetes API unreachable: {exc!r}", delay=5) from exc
        except ApiException as exc:
            if exc.status is None or (exc.status < 500 and exc.status != 429):
                raise
            raise kopf.TemporaryError(f"Kubernetes API answered {exc.status}", delay=5) from exc

    return wrapped
