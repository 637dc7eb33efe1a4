"""How the operator logs in to Kubernetes: kubeconfig (explicit or $KUBECONFIG) or in-cluster."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec

import aiohttp
import kopf
import kubernetes
import urllib3

# kopf's namespace matcher is not exported; using it keeps start-up listing and watching equal.
from kopf._cogs.structs.references import NamespaceName, match_namespace
from kubernetes.client.exceptions import ApiException

P = ParamSpec("P")

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


class MergePatcher:
    """Merge PATCHes from the event loop, for the write every reconcile makes before its call.

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
        self._max_connections = max_connections
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
            await self._merge_patch(path, body)

    async def _merge_patch(self, path: str, body: dict[str, Any]) -> None:
        for attempt in (1, 2):
            server, session = self._current_session()
            async with session.patch(
                server + path,
                json=body,
                headers={"Content-Type": "application/merge-patch+json"},
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
            session = api_session(info, self._max_connections, self._timeout)
            self._session = (str(info.server).rstrip("/"), session)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session[1], None
            await session.close()


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
