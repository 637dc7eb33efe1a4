"""Hostile input: refused at admission with the field named, or a clear condition; never a crash.

Every case runs against the same operator, beside a valid binding that must keep converging.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv.milvus_server import EmbeddedMilvus
from tests.conftest import roles_of
from tests.e2e.conftest import (
    GROUP,
    VERSION,
    Cluster,
    OperatorProcess,
    binding,
    connection,
    ready,
    wait_reason,
)
from tests.e2e.test_bindings import wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("running_operator")]
CONNECTION_SPEC = {"uri": "http://127.0.0.1:19530", "credentialsSecretRef": {"name": "creds"}}


def kind_object(kind: str, spec: Any, namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "hostile"}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": metadata, "spec": spec}


def with_spec(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`base` with the dotted `path` set to `value` (None removes it)."""
    spec = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = path.split(".")
    where = spec
    for key in parents:
        where = where.setdefault(key, {})
    if value is None:
        where.pop(last, None)
    else:
        where[last] = value
    return spec


BINDING_SPEC = {"connectionRef": {"name": "milvus"}, "username": "alice", "roleName": "reader"}
# (id, kind, spec, text the API server's refusal must contain)
REFUSED: list[tuple[str, str, Any, str]] = [
    ("ftp scheme", "MilvusConnection", with_spec(CONNECTION_SPEC, "uri", "ftp://h:1"), "spec.uri"),
    (
        "file uri",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "uri", "file:///etc/passwd"),
        "spec.uri",
    ),
    (
        "credentials in the uri",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "uri", "http://root:Milvus@127.0.0.1:19530"),
        "spec.uri",
    ),
    (
        "uri with a path",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "uri", "http://h:1/x/y"),
        "spec.uri",
    ),
    (
        "uri with a space",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "uri", "http://h :1"),
        "spec.uri",
    ),
    (
        "unicode host",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "uri", "http://mílvus:1"),
        "spec.uri",
    ),
    (
        "newline in uri",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "uri", "http://h:1\nx"),
        "spec.uri",
    ),
    ("empty uri", "MilvusConnection", with_spec(CONNECTION_SPEC, "uri", ""), "spec.uri"),
    (
        "huge uri",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "uri", "http://" + "h" * 3000),
        "spec.uri",
    ),
    ("uri as a number", "MilvusConnection", with_spec(CONNECTION_SPEC, "uri", 19530), "spec.uri"),
    ("missing uri", "MilvusConnection", with_spec(CONNECTION_SPEC, "uri", None), "spec.uri"),
    (
        "missing credentials",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "credentialsSecretRef", None),
        "spec.credentialsSecretRef",
    ),
    (
        "Secret name with capitals",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "credentialsSecretRef.name", "Creds"),
        "spec.credentialsSecretRef.name",
    ),
    (
        "Secret in another namespace",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "credentialsSecretRef.namespace", "kube-system"),
        "spec.credentialsSecretRef.namespace",
    ),
    (
        "zero timeout",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "timeoutSeconds", 0),
        "spec.timeoutSeconds",
    ),
    (
        "timeout as text",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "timeoutSeconds", "10s"),
        "spec.timeoutSeconds",
    ),
    (
        "database with a dash",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "database", "my-db"),
        "spec.database",
    ),
    (
        "CA reference without a name",
        "MilvusConnection",
        with_spec(
            with_spec(CONNECTION_SPEC, "uri", "https://h:1"), "tls", {"caSecretRef": {"key": "ca"}}
        ),
        "spec.tls.caSecretRef.name",
    ),
    (
        "TLS over an http uri",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "tls", {"serverName": "milvus"}),
        "spec.tls needs an https:// uri",
    ),
    (
        "TLS without verification",
        "MilvusConnection",
        with_spec(
            with_spec(CONNECTION_SPEC, "uri", "https://h:1"), "tls", {"insecureSkipVerify": True}
        ),
        "spec.tls.insecureSkipVerify",
    ),
    (
        "unknown field",
        "MilvusConnection",
        with_spec(CONNECTION_SPEC, "password", "x"),
        "spec.password",
    ),
    ("spec as a string", "MilvusConnection", "uri=http://h:1", "spec"),
    (
        "allowedRoles as a string",
        "ClusterMilvusConnection",
        with_spec(CONNECTION_SPEC, "policy", {"allowedRoles": "admin"}),
        "spec.policy.allowedRoles",
    ),
    (
        "unknown selector operator",
        "ClusterMilvusConnection",
        with_spec(
            CONNECTION_SPEC,
            "policy",
            {
                "allowedNamespaces": {
                    "selector": {"matchExpressions": [{"key": "a", "operator": "Like"}]}
                }
            },
        ),
        "operator",
    ),
    (
        "unknown policy field",
        "ClusterMilvusConnection",
        with_spec(CONNECTION_SPEC, "policy", {"allowAll": True}),
        "spec.policy.allowAll",
    ),
    (
        "too many role patterns",
        "ClusterMilvusConnection",
        with_spec(CONNECTION_SPEC, "policy", {"allowedRoles": [f"r{i}" for i in range(300)]}),
        "spec.policy.allowedRoles",
    ),
    (
        "role pattern over the limit",
        "ClusterMilvusConnection",
        with_spec(CONNECTION_SPEC, "policy", {"deniedRoles": ["r" * 300]}),
        "spec.policy.deniedRoles",
    ),
    (
        "connectionRef kind Secret",
        "MilvusRoleBinding",
        with_spec(BINDING_SPEC, "connectionRef.kind", "Secret"),
        "spec.connectionRef.kind",
    ),
    (
        "control character in username",
        "MilvusRoleBinding",
        with_spec(BINDING_SPEC, "username", "al\x01ce"),
        "spec.username",
    ),
    (
        "username of 10,000 characters",
        "MilvusRoleBinding",
        with_spec(BINDING_SPEC, "username", "a" * 10000),
        "spec.username",
    ),
    (
        "emoji role",
        "MilvusRoleBinding",
        with_spec(BINDING_SPEC, "roleName", "reader🔥"),
        "spec.roleName",
    ),
    (
        "username as a list",
        "MilvusRoleBinding",
        with_spec(BINDING_SPEC, "username", ["alice"]),
        "spec.username",
    ),
    (
        "unknown binding field",
        "MilvusRoleBinding",
        with_spec(BINDING_SPEC, "grantAll", True),
        "spec.grantAll",
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "named"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_hostile_object_is_refused_at_admission_naming_the_field(
    cluster: Cluster, namespace: str, kind: str, spec: Any, named: str
) -> None:
    scoped = None if kind == "ClusterMilvusConnection" else namespace
    obj = kind_object(kind, spec, scoped)
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj), check=False)
    assert result.returncode != 0, f"accepted: {spec!r}"
    assert named in result.stderr, result.stderr
    plural = {"MilvusConnection": "mconn", "ClusterMilvusConnection": "cmconn"}.get(kind, "mrb")
    where = [] if scoped is None else [f"-n={namespace}"]
    assert cluster.kubectl("get", plural, "hostile", *where, check=False).returncode != 0


def raw_secret(namespace: str, name: str, **data: bytes) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": encoded,
    }


# Accepted by the schema, refused by the operator with a clear condition on the connection and
# on its binding: (id, Secret data, connection spec changes, reason).
UNUSABLE: list[tuple[str, dict[str, bytes], dict[str, Any], str]] = [
    ("Secret without the keys", {"user": b"root"}, {}, "SecretInvalid"),
    ("username without password", {"username": b"root"}, {}, "SecretInvalid"),
    ("empty token", {"token": b""}, {}, "SecretInvalid"),
    (
        "binary junk password",
        {"username": b"root", "password": b"\xff\xfe\x00\x9c"},
        {},
        "SecretInvalid",
    ),
    (
        "host outside the allowed hosts",
        {"token": b"root:Milvus"},
        {"uri": "http://127.0.0.2:19530"},
        "HostNotAllowed",
    ),
    (
        "CA Secret without the key",
        {"token": b"root:Milvus", "ca.crt": b""},
        {"uri": "https://localhost:1", "tls": {"caSecretRef": {"name": "{secret}", "key": "nope"}}},
        "SecretInvalid",
    ),
    (
        "CA that is not a certificate",
        {"token": b"root:Milvus", "ca.crt": b"-----BEGIN JUNK-----\n\x00\x01\n"},
        {"uri": "https://localhost:{port}", "tls": {"caSecretRef": {"name": "{secret}"}}},
        "TLSError",
    ),
]


def test_unusable_connections_get_a_clear_condition_and_the_valid_binding_still_converges(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    running_milvus: EmbeddedMilvus,
    operator: OperatorProcess,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    log_start = len(operator.log_text())
    objects: list[dict[str, Any]] = []
    for index, (_, data, changes, _) in enumerate(UNUSABLE):
        name = f"bad-{index}"
        spec = yaml.safe_load(
            yaml.safe_dump(changes)
            .replace("{secret}", name)
            .replace("{port}", str(running_milvus.port))
        )
        uri = spec.pop("uri", running_milvus.uri)
        conn = connection(namespace, name, uri, name, **spec)
        objects += [raw_secret(namespace, name, **data), conn]
        objects.append(binding(namespace, name, "alice", "reader", connection_name=name))
    user, role = make_user(), make_role()
    objects.append(binding(namespace, "valid", user, role))
    cluster.apply(*objects)

    wait_ready(cluster, namespace, "valid")
    assert roles_of(milvus_admin, user) == {role}
    seen = {}
    for index, (case, _, _, reason) in enumerate(UNUSABLE):
        name = f"bad-{index}"
        obj = wait_ready(cluster, namespace, name, reason=reason, status="False")
        conn = wait_reason(cluster, "milvusconnections", namespace, name, reason)
        seen[case] = ready(obj)["message"]
        assert ready(conn)["message"], case
    print("\n".join(f"{case}: {message}" for case, message in seen.items()))
    assert operator.proc.poll() is None  # still running: no crash loop
    log = operator.log_text()[log_start:]
    assert "Traceback" not in log
    # And it keeps serving: a binding made after all of this converges too.
    later_user = make_user()
    cluster.apply(binding(namespace, "after", later_user, role))
    wait_ready(cluster, namespace, "after")
    assert roles_of(milvus_admin, later_user) == {role}
