"""connectionRef + Secret -> a cached Milvus client, rebuilt when either changes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from milvus_rbac_operator import kubeclient, policy, status
from milvus_rbac_operator.milvus import Credentials, Endpoint, MilvusRBAC
from milvus_rbac_operator.model import ConnectionKey, ConnectionRef
from milvus_rbac_operator.reconcile import UnusableConnectionError
from milvus_rbac_operator.status import Reason

GROUP = "rbac.milvus.io"
VERSION = "v1alpha1"
CONNECTIONS = "milvusconnections"
CLUSTER_CONNECTIONS = "clustermilvusconnections"
BINDINGS = "milvusrolebindings"


@dataclass(frozen=True)
class ResolvedConnection:
    endpoint: Endpoint
    credentials: Credentials
    secret_name: str

    def fingerprint(self) -> str:
        # Only a digest of the credentials is kept, to notice a changed Secret.
        digest = hashlib.sha256()
        for part in (
            self.endpoint.uri,
            self.endpoint.database,
            self.endpoint.server_name,
            str(self.endpoint.timeout_seconds),
            self.credentials.as_token(),
        ):
            digest.update(part.encode() + b"\0")
        digest.update(self.endpoint.ca_pem)
        return digest.hexdigest()


def _decode(data: dict[str, str] | None, key: str) -> bytes | None:
    if not data or key not in data:
        return None
    try:
        return base64.b64decode(data[key], validate=True)
    except (binascii.Error, ValueError):
        return None


def credentials_from_secret(name: str, data: dict[str, str] | None) -> Credentials:
    """Keys `token`, or `username` and `password`; anything else is a clear SecretInvalid."""

    def text(key: str) -> str:
        raw = _decode(data, key)
        if raw is None:
            return ""
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise UnusableConnectionError(
                status.refused(Reason.SECRET_INVALID, f"Secret {name}: key {key} is not UTF-8 text")
            ) from exc

    token = text("token")
    if token:
        return Credentials(token=token)
    username, password = text("username"), text("password")
    if username and password:
        return Credentials(username=username, password=password)
    raise UnusableConnectionError(
        status.refused(
            Reason.SECRET_INVALID,
            f"Secret {name} must hold a non-empty `token`, or `username` and `password`",
        )
    )


def endpoint_from_spec(spec: dict[str, Any], ca_pem: bytes, default_timeout: float) -> Endpoint:
    tls = spec.get("tls") or {}
    return Endpoint(
        uri=str(spec["uri"]),
        database=str(spec.get("database") or ""),
        ca_pem=ca_pem,
        server_name=str(tls.get("serverName") or ""),
        timeout_seconds=float(spec.get("timeoutSeconds") or default_timeout),
    )


class KubeAPI:
    """The few reads and writes kopf does not make for us, off the event loop."""

    def __init__(self, api_client: k8s.ApiClient, patcher: kubeclient.KubeWriter) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._patcher = patcher

    async def connection(self, namespace: str, ref: ConnectionRef) -> dict[str, Any] | None:
        """The MilvusConnection in `namespace`, or the ClusterMilvusConnection, named by `ref`."""
        if ref.cluster_scoped:
            read = lambda: self._custom.get_cluster_custom_object(  # noqa: E731
                GROUP, VERSION, CLUSTER_CONNECTIONS, ref.name
            )
        else:
            read = lambda: self._custom.get_namespaced_custom_object(  # noqa: E731
                GROUP, VERSION, namespace, CONNECTIONS, ref.name
            )
        found: dict[str, Any] | None = await self._get(read)
        return found

    async def list_pages(
        self, plural: str, namespaces: tuple[str, ...] = ()
    ) -> AsyncIterator[list[kopf.Body]]:
        """Every object of a kind (in the served namespaces), a page at a time, as kopf bodies.

        A page is dropped before the next is read: at 10,000 bindings the whole listing as
        Python objects would be over 100 MB.
        """
        if plural == "namespaces":
            listed = await asyncio.to_thread(self._core.list_namespace)
            yield [
                kopf.Body(item)
                for item in self._core.api_client.sanitize_for_serialization(listed)["items"]
            ]
            return
        pages: list[Callable[[str | None], Any]]
        if plural == CLUSTER_CONNECTIONS or not namespaces:
            pages = [functools.partial(self._list_page, "", plural)]
        else:
            names = kubeclient.served_namespaces(
                namespaces,
                [
                    str(body.meta.name)
                    async for page in self.list_pages("namespaces")
                    for body in page
                ],
            )
            pages = [functools.partial(self._list_page, namespace, plural) for namespace in names]
        for page in pages:
            token: str | None = None
            while True:
                found = await asyncio.to_thread(page, token)
                yield [kopf.Body(item) for item in found.get("items", [])]
                token = (found.get("metadata") or {}).get("continue")
                if not token:
                    break

    def _list_page(self, namespace: str, plural: str, token: str | None) -> Any:
        if not namespace:
            return self._custom.list_cluster_custom_object(
                GROUP, VERSION, plural, limit=kubeclient.LIST_PAGE_SIZE, _continue=token
            )
        return self._custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, limit=kubeclient.LIST_PAGE_SIZE, _continue=token
        )

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        found = await self._get(lambda: self._core.read_namespace(name))
        return None if found is None else dict(found.metadata.labels or {})

    async def annotate_binding(self, namespace: str, name: str, key: str, value: str) -> None:
        """Ask a binding's own handler to reconcile it again (see inventory.py)."""
        await self._patch_binding(namespace, name, {"annotations": {key: value}})

    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = await self._get(lambda: self._core.read_namespaced_secret(name, namespace))
        if secret is None:
            return None
        return dict(secret.data or {})

    async def claim_binding(
        self,
        namespace: str,
        name: str,
        resource_version: str,
        finalizers: list[str],
        annotations: dict[str, str],
    ) -> None:
        """Finalizer and intent in one write; the resourceVersion makes it fail on a race."""
        metadata = {
            "resourceVersion": resource_version,
            "finalizers": finalizers,
            "annotations": annotations,
        }
        await self._patch_binding(namespace, name, metadata)

    async def _patch_binding(self, namespace: str, name: str, metadata: dict[str, Any]) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{BINDINGS}/{name}"
        await self._patcher.merge_patch(path, {"metadata": metadata})

    async def close(self) -> None:
        await self._patcher.close()

    @staticmethod
    async def _get(read: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(read)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


class ConnectionRegistry:
    """One Milvus client per connection, kept while its spec and Secret stay the same.

    A MilvusConnection's Secrets are in its own namespace; a ClusterMilvusConnection's are in
    the operator's namespace. Either way, the host must be one the operator may dial.
    """

    def __init__(
        self,
        kube: KubeAPI,
        default_timeout: float,
        operator_namespace: str = "default",
        allowed_hosts: tuple[str, ...] = ("*",),
        recheck_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        make_client: Callable[[Endpoint, Credentials], MilvusRBAC] = MilvusRBAC,
    ) -> None:
        self._make_client = make_client
        self._kube = kube
        self._default_timeout = default_timeout
        self._operator_namespace = operator_namespace
        self._allowed_hosts = allowed_hosts
        self._recheck_seconds = recheck_seconds
        self._clock = clock
        self._clients: dict[ConnectionKey, tuple[str, MilvusRBAC]] = {}
        # When each client was last found to match its connection and Secret: within
        # `recheck_seconds` it is used without reading them again (two GETs per reconcile).
        self._confirmed: dict[ConnectionKey, float] = {}
        self._pending: dict[ConnectionKey, asyncio.Future[MilvusRBAC]] = {}
        self._lock = asyncio.Lock()

    async def resolve(self, namespace: str, ref: ConnectionRef) -> ResolvedConnection:
        connection = await self._kube.connection(namespace, ref)
        where = (
            f"{ref.kind} {ref.name}" if ref.cluster_scoped else f"{ref.kind} {namespace}/{ref.name}"
        )
        if connection is None:
            raise UnusableConnectionError(
                status.refused(Reason.CONNECTION_NOT_FOUND, f"{where} not found")
            )
        spec = connection.get("spec") or {}
        refused_host = policy.host_refusal(str(spec.get("uri") or ""), self._allowed_hosts)
        if refused_host is not None:
            # Refused before any network attempt: no tenant can make the operator probe a host.
            raise UnusableConnectionError(
                status.refused(Reason.HOST_NOT_ALLOWED, f"{where}: {refused_host}")
            )
        secrets_namespace = self._operator_namespace if ref.cluster_scoped else namespace
        secret_name = str(spec["credentialsSecretRef"]["name"])
        data = await self._kube.secret_data(secrets_namespace, secret_name)
        if data is None:
            raise UnusableConnectionError(
                status.refused(
                    Reason.SECRET_NOT_FOUND,
                    f"Secret {secrets_namespace}/{secret_name} (credentials of {where}) not found",
                )
            )
        credentials = credentials_from_secret(secret_name, data)
        ca_pem = await self._ca(secrets_namespace, where, spec)
        endpoint = endpoint_from_spec(spec, ca_pem, self._default_timeout)
        return ResolvedConnection(endpoint, credentials, secret_name)

    async def _ca(self, namespace: str, where: str, spec: dict[str, Any]) -> bytes:
        ref = (spec.get("tls") or {}).get("caSecretRef")
        if not ref:
            return b""
        secret_name, key = str(ref["name"]), str(ref.get("key") or "ca.crt")
        data = await self._kube.secret_data(namespace, secret_name)
        if data is None:
            raise UnusableConnectionError(
                status.refused(
                    Reason.SECRET_NOT_FOUND,
                    f"Secret {namespace}/{secret_name} (CA of {where}) not found",
                )
            )
        ca = _decode(data, key)
        if not ca:
            raise UnusableConnectionError(
                status.refused(
                    Reason.SECRET_INVALID, f"Secret {secret_name} has no key {key} with a CA"
                )
            )
        return ca

    async def client_for(
        self,
        namespace: str,
        ref: ConnectionRef,
        allow_cached: bool = False,
        fresh: bool = False,
    ) -> MilvusRBAC:
        """A client with the connection's current spec and credentials.

        They are read again when the client was last confirmed more than `recheck_seconds` ago,
        when `fresh` is asked for, or after `invalidate`. With `allow_cached`, a client built
        before is used when the Secret is gone: a namespace being deleted removes Secret,
        connection and bindings together, and the removals that deletion needs must still
        happen (the operator never writes Secrets, so it cannot hold them with a finalizer).
        """
        key = ref.key(namespace)
        cached = self._clients.get(key)
        confirmed = self._confirmed.get(key)
        recent = confirmed is not None and self._clock() - confirmed < self._recheck_seconds
        if not fresh and cached is not None and recent:
            return cached[1]
        try:
            if fresh:
                return await self._confirm(namespace, ref)
            return await self._shared_confirm(namespace, ref)
        except UnusableConnectionError:
            cached = self._clients.get(key)
            if allow_cached and cached is not None:
                return cached[1]
            raise

    async def _shared_confirm(self, namespace: str, ref: ConnectionRef) -> MilvusRBAC:
        """One read of a connection and its Secret for every reconcile that needs it now.

        When the recheck interval ends in the middle of a bulk rollout, hundreds of reconciles
        would otherwise each read both again.
        """
        key = ref.key(namespace)
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._confirm(namespace, ref))
            self._pending[key] = pending
            pending.add_done_callback(functools.partial(self._confirmed_once, key))
        return await asyncio.shield(pending)

    def _confirmed_once(self, key: ConnectionKey, done: asyncio.Future[MilvusRBAC]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # every waiter sees it; do not also report it as unretrieved

    async def _confirm(self, namespace: str, ref: ConnectionRef) -> MilvusRBAC:
        key = ref.key(namespace)
        resolved = await self.resolve(namespace, ref)
        fingerprint = resolved.fingerprint()
        async with self._lock:
            self._confirmed[key] = self._clock()
            cached = self._clients.get(key)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            client = self._make_client(resolved.endpoint, resolved.credentials)
            self._clients[key] = (fingerprint, client)
        if cached is not None:
            await cached[1].close()
        return client

    def invalidate(self, key: ConnectionKey) -> None:
        """Read the connection and its Secret again on the next call (after a refusal)."""
        self._confirmed.pop(key, None)

    async def forget(self, key: ConnectionKey) -> None:
        async with self._lock:
            self._confirmed.pop(key, None)
            cached = self._clients.pop(key, None)
        if cached is not None:
            await cached[1].close()

    async def close(self) -> None:
        async with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for _, client in clients:
            await client.close()
