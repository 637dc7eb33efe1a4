"""Tenancy and security, end to end: policies, hosts, protected users, secrets, TLS, RBAC."""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv import LocalEnvironment
from milvus_rbac_operator.devenv.milvus_server import ROOT_PASSWORD, ROOT_USERNAME, EmbeddedMilvus
from milvus_rbac_operator.inventory import INTENT_ANNOTATION
from tests.conftest import TLSMilvus, roles_of
from tests.e2e.conftest import (
    GROUP,
    OPERATOR_ENV,
    VERSION,
    Cluster,
    OperatorProcess,
    binding,
    connection,
    dump,
    eventually,
    operator_identity,
    ready,
    secret,
    wait_reason,
)
from tests.e2e.test_bindings import wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("running_operator")]
OPERATOR_NAMESPACE = OPERATOR_ENV["MRBO_OPERATOR_NAMESPACE"]
SERVICE_ACCOUNT = f"system:serviceaccount:{OPERATOR_NAMESPACE}:milvus-rbac-operator"


def cluster_connection(name: str, uri: str, secret_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterMilvusConnection",
        "metadata": {"name": name},
        "spec": {"uri": uri, "credentialsSecretRef": {"name": secret_name}, **spec},
    }


def via_cluster(namespace: str, name: str, user: str, role: str, shared: str) -> dict[str, Any]:
    obj = binding(namespace, name, user, role)
    obj["spec"]["connectionRef"] = {"kind": "ClusterMilvusConnection", "name": shared}
    return obj


def condition_of(obj: dict[str, Any] | None) -> tuple[str, str]:
    found = ready(obj) or {}
    return str(found.get("status")), str(found.get("reason"))


@pytest.fixture
def shared(
    cluster: Cluster, running_milvus: EmbeddedMilvus, unique: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """Makes ClusterMilvusConnections to the shared Milvus; root's Secret in the operator's
    namespace. Deleted again at the end (after the test's bindings are gone)."""
    made: list[str] = []
    cluster.apply(secret(OPERATOR_NAMESPACE, "shared-milvus", username="root", password="Milvus"))

    def make(**policy: Any) -> str:
        name = unique("shared").replace("_", "-")
        cluster.apply(cluster_connection(name, running_milvus.uri, "shared-milvus", policy=policy))
        made.append(name)
        return name

    yield make
    for name in made:
        cluster.kubectl("delete", "cmconn", name, "--wait=false", check=False)


def test_cluster_connection_reports_ready_with_server_version(
    cluster: Cluster, shared: Callable[..., str]
) -> None:
    name = shared()
    obj = wait_reason(cluster, "clustermilvusconnections", "", name, "Connected")
    assert obj["status"]["serverVersion"].startswith("v2.3.5")
    listed = cluster.kubectl("get", "cmconn", name).stdout
    assert "Connected" in listed


def test_binding_allowed_by_the_policy_is_granted(
    cluster: Cluster,
    namespace: str,
    shared: Callable[..., str],
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    name = shared(allowedNamespaces={"names": [namespace]}, allowedRoles=["role_*"])
    cluster.apply(via_cluster(namespace, "allowed", user, role, name))
    obj = wait_ready(cluster, namespace, "allowed")
    assert roles_of(milvus_admin, user) == {role}
    assert obj["status"]["applied"]["connectionKind"] == "ClusterMilvusConnection"
    wide = cluster.kubectl("get", "mrb", "allowed", f"-n={namespace}", "-o=wide").stdout
    assert "ClusterMilvusConnection" in wide
    cluster.kubectl("delete", "mrb", "allowed", f"-n={namespace}", "--timeout=60s")
    assert roles_of(milvus_admin, user) == set()


@pytest.mark.parametrize(
    ("policy", "role_name", "rule"),
    [
        pytest.param({}, "role", "allowedNamespaces names: none", id="no namespace allowed"),
        pytest.param(
            {"allowedNamespaces": {"names": ["*"]}, "allowedRoles": ["*"]},
            "admin",
            "listed by name in spec.policy.allowedRoles",
            id="admin through a match-all pattern",
        ),
        pytest.param(
            {"allowedNamespaces": {"names": ["*"]}, "deniedRoles": ["role_*"]},
            "role",
            'deniedRoles entry "role_*"',
            id="denied role",
        ),
        pytest.param(
            {"allowedNamespaces": {"names": ["*"]}, "allowedUsers": ["svc_*"]},
            "role",
            "spec.policy.allowedUsers: svc_*",
            id="user not allowed",
        ),
    ],
)
def test_binding_the_policy_forbids_makes_no_milvus_call(
    cluster: Cluster,
    namespace: str,
    shared: Callable[..., str],
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
    policy: dict[str, Any],
    role_name: str,
    rule: str,
) -> None:
    user = make_user()
    role = "admin" if role_name == "admin" else make_role()
    name = shared(**policy)
    cluster.apply(via_cluster(namespace, "greedy", user, role, name))
    obj = wait_ready(cluster, namespace, "greedy", reason="Forbidden", status="False")
    assert rule in ready(obj)["message"]
    assert f"ClusterMilvusConnection {name}" in ready(obj)["message"]
    assert "resStatus" not in obj["status"]  # no Milvus call was made
    assert roles_of(milvus_admin, user) == set()
    stalled = [c for c in obj["status"]["conditions"] if c["type"] == "Stalled"]
    assert stalled[0]["status"] == "True"
    warnings = eventually(  # Events are posted in the background
        lambda: [e for e in cluster.events(namespace, "greedy") if e.reason == "Forbidden"],
        "the Forbidden event",
        10,
    )
    assert warnings[-1].type == "Warning"


def test_deleting_a_binding_the_policy_forbids_leaves_a_grant_made_by_hand(
    cluster: Cluster,
    namespace: str,
    shared: Callable[..., str],
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
) -> None:
    """Its intent names the pair from its creation on (admission), but it never held it."""
    user = make_user()
    milvus_admin.grant_role(user, "admin")  # the platform team's, made in Milvus directly
    try:
        name = shared(allowedNamespaces={"names": [namespace]}, allowedRoles=["role_*"])
        cluster.apply(via_cluster(namespace, "grab", user, "admin", name))
        wait_ready(cluster, namespace, "grab", reason="Forbidden", status="False")
        assert roles_of(milvus_admin, user) == {"admin"}
        cluster.kubectl("delete", "mrb", "grab", f"-n={namespace}", "--timeout=60s")
        assert roles_of(milvus_admin, user) == {"admin"}
    finally:
        milvus_admin.revoke_role(user, "admin")


def test_an_intent_a_tenant_writes_never_removes_a_grant_the_policy_forbids(
    cluster: Cluster,
    namespace: str,
    shared: Callable[..., str],
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    """Anyone who may edit a binding may write its intent annotation: it is checked too."""
    victim, user, role, other_role = make_user(), make_user(), make_role(), make_role()
    milvus_admin.grant_role(victim, "admin")
    try:
        name = shared(allowedNamespaces={"names": [namespace]}, allowedRoles=["role_*"])
        cluster.apply(via_cluster(namespace, "tenant", user, role, name))
        wait_ready(cluster, namespace, "tenant")
        forged = {
            "connection": name,
            "connectionKind": "ClusterMilvusConnection",
            "roleName": "admin",
            "username": victim,
        }
        forge = ["annotate", "mrb", "tenant", f"-n={namespace}", "--overwrite"]
        cluster.kubectl(*forge, f"{INTENT_ANNOTATION}={json.dumps(forged)}")
        # A spec change: the reconcile removes what the binding claims and the spec left.
        change = dump({"spec": {"roleName": other_role}})
        cluster.kubectl("patch", "mrb", "tenant", f"-n={namespace}", "--type=merge", "-p", change)
        wait_ready(cluster, namespace, "tenant")
        assert roles_of(milvus_admin, user) == {other_role}
        assert roles_of(milvus_admin, victim) == {"admin"}
        # A deletion: it removes what the binding claims.
        cluster.kubectl(*forge, f"{INTENT_ANNOTATION}={json.dumps(forged)}")
        cluster.kubectl("delete", "mrb", "tenant", f"-n={namespace}", "--timeout=60s")
        assert roles_of(milvus_admin, user) == set()
        assert roles_of(milvus_admin, victim) == {"admin"}
    finally:
        milvus_admin.revoke_role(victim, "admin")


def test_loosening_the_policy_grants_and_tightening_it_revokes(
    cluster: Cluster,
    namespace: str,
    shared: Callable[..., str],
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    name = shared(allowedNamespaces={"names": ["nobody"]})
    cluster.apply(via_cluster(namespace, "waits", user, role, name))
    wait_ready(cluster, namespace, "waits", reason="Forbidden", status="False")

    allow = {"spec": {"policy": {"allowedNamespaces": {"names": [namespace]}}}}
    cluster.kubectl("patch", "cmconn", name, "--type=merge", "-p", dump(allow))
    wait_ready(cluster, namespace, "waits")  # nobody touched the binding
    assert roles_of(milvus_admin, user) == {role}

    deny = {"spec": {"policy": {"deniedRoles": [role]}}}
    cluster.kubectl("patch", "cmconn", name, "--type=merge", "-p", dump(deny))
    obj = wait_ready(cluster, namespace, "waits", reason="Forbidden", status="False")
    assert roles_of(milvus_admin, user) == set()  # the policy no longer allows it: removed
    assert obj["status"]["resStatus"]["operation"] == "RemoveUserFromRole"
    assert obj["status"].get("applied") is None
    cluster.kubectl("delete", "mrb", "waits", f"-n={namespace}", "--timeout=60s")


def test_namespace_labels_decide_through_the_selector(
    cluster: Cluster,
    namespace: str,
    shared: Callable[..., str],
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    name = shared(allowedNamespaces={"selector": {"matchLabels": {"milvus-tenant": "yes"}}})
    cluster.apply(via_cluster(namespace, "labelled", user, role, name))
    wait_ready(cluster, namespace, "labelled", reason="Forbidden", status="False")
    cluster.kubectl("label", "namespace", namespace, "milvus-tenant=yes")
    wait_ready(cluster, namespace, "labelled")
    assert roles_of(milvus_admin, user) == {role}
    cluster.kubectl("label", "namespace", namespace, "milvus-tenant-")
    wait_ready(cluster, namespace, "labelled", reason="Forbidden", status="False")
    assert roles_of(milvus_admin, user) == set()


def test_cluster_connection_secret_is_read_only_from_the_operator_namespace(
    cluster: Cluster, namespace: str, running_milvus: EmbeddedMilvus, unique: Callable[[str], str]
) -> None:
    name = unique("elsewhere").replace("_", "-")
    # The Secret exists, but in a tenant's namespace: a tenant must not be able to supply it.
    cluster.apply(
        secret(namespace, "tenant-made", username="root", password="Milvus"),
        cluster_connection(name, running_milvus.uri, "tenant-made"),
    )
    try:
        obj = wait_reason(cluster, "clustermilvusconnections", "", name, "SecretNotFound")
        assert f"Secret {OPERATOR_NAMESPACE}/tenant-made" in ready(obj)["message"]
    finally:
        cluster.kubectl("delete", "cmconn", name, "--wait=false")


def test_binding_cannot_use_a_connection_of_another_namespace(
    cluster: Cluster, namespace: str, milvus_connection: str, unique: Callable[[str], str]
) -> None:
    other = f"other-{uuid.uuid4().hex[:8]}"
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
        binding(other, "reach", "alice", "reader", connection_name=milvus_connection),
    )
    obj = wait_ready(cluster, other, "reach", reason="ConnectionNotFound", status="False")
    assert f"MilvusConnection {other}/{milvus_connection} not found" in ready(obj)["message"]
    refused = cluster.apply(
        connection(
            other,
            "borrow",
            "http://127.0.0.1:1",
            "x",
            credentialsSecretRef={"name": "milvus-root", "namespace": namespace},
        ),
        check=False,
    )
    assert refused.returncode != 0
    assert "credentialsSecretRef.namespace" in refused.stderr


class Listener:
    """Records every connection made to a loopback address (never answers)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_connection_to_a_host_outside_the_allowed_hosts_is_never_dialled(
    cluster: Cluster, namespace: str
) -> None:
    probe = Listener("127.0.0.2")  # stands for any service a tenant wants to probe
    try:
        cluster.apply(
            secret(namespace, "creds", username="root", password="Milvus"),
            connection(namespace, "probe", f"http://127.0.0.2:{probe.port}", "creds"),
            binding(namespace, "probing", "alice", "reader", connection_name="probe"),
        )
        conn = wait_reason(cluster, "milvusconnections", namespace, "probe", "HostNotAllowed")
        assert (
            f"host 127.0.0.2:{probe.port} is not in the operator's allowed hosts"
            in (ready(conn)["message"])
        )
        obj = wait_ready(cluster, namespace, "probing", reason="HostNotAllowed", status="False")
        assert "resStatus" not in obj["status"]
        assert probe.accepted == 0
    finally:
        probe.close()


def test_protected_users_are_never_bound(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_role: Callable[[], str],
) -> None:
    guarded, role = OPERATOR_ENV["MRBO_PROTECTED_USERS"], make_role()
    if guarded not in milvus_admin.list_users():
        milvus_admin.create_user(guarded, "guarded-pw")
    before = roles_of(milvus_admin, guarded)
    cluster.apply(binding(namespace, "guard", guarded, role))
    obj = wait_ready(cluster, namespace, "guard", reason="ProtectedUser", status="False")
    assert f"user {guarded} is protected" in ready(obj)["message"]
    assert "resStatus" not in obj["status"]
    assert roles_of(milvus_admin, guarded) == before
    assert role not in before


def test_moving_a_binding_to_root_removes_the_old_grant_and_leaves_root_alone(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    root_roles = roles_of(milvus_admin, ROOT_USERNAME)
    cluster.apply(binding(namespace, "moves", user, role))
    wait_ready(cluster, namespace, "moves")
    cluster.apply(binding(namespace, "moves", ROOT_USERNAME, role))
    wait_ready(cluster, namespace, "moves", reason="ProtectedUser", status="False")
    assert roles_of(milvus_admin, user) == set()
    assert roles_of(milvus_admin, ROOT_USERNAME) == root_roles
    cluster.kubectl("delete", "mrb", "moves", f"-n={namespace}", "--timeout=60s")
    assert roles_of(milvus_admin, ROOT_USERNAME) == root_roles


def test_tls_connection_with_its_ca_works_and_a_wrong_ca_is_a_clear_error(
    cluster: Cluster, namespace: str, tls_milvus: TLSMilvus, unique: Callable[[str], str]
) -> None:
    admin = tls_milvus.admin()
    user, role = unique("tls_user"), unique("tls_role")
    admin.create_user(user, f"{user}-pw")
    admin.create_role(role)
    uri = tls_milvus.server.uri
    cluster.apply(
        secret(namespace, "tls-creds", username=ROOT_USERNAME, password=ROOT_PASSWORD),
        secret(namespace, "milvus-ca", **{"ca.crt": tls_milvus.ca_pem.decode()}),
        secret(namespace, "stranger-ca", **{"ca.crt": tls_milvus.other_ca_pem.decode()}),
        connection(
            namespace,
            "tls",
            uri,
            "tls-creds",
            tls={"caSecretRef": {"name": "milvus-ca"}, "serverName": "localhost"},
        ),
        connection(
            namespace,
            "wrong-ca",
            uri,
            "tls-creds",
            tls={"caSecretRef": {"name": "stranger-ca"}, "serverName": "localhost"},
        ),
        binding(namespace, "over-tls", user, role, connection_name="tls"),
        binding(namespace, "wrong-ca", user, role, connection_name="wrong-ca"),
    )
    try:
        wait_reason(cluster, "milvusconnections", namespace, "tls", "Connected")
        wait_ready(cluster, namespace, "over-tls")
        assert roles_of(admin, user) == {role}
        bad = wait_reason(cluster, "milvusconnections", namespace, "wrong-ca", "TLSError")
        assert "CERTIFICATE_VERIFY_FAILED" in ready(bad)["message"]
        obj = wait_ready(cluster, namespace, "wrong-ca", reason="TLSError", status="False")
        assert "no plaintext fallback" in ready(obj)["message"]
    finally:
        admin.close()


def test_secrets_never_appear_in_logs_events_status_or_annotations(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    local_env: LocalEnvironment,
    running_milvus: EmbeddedMilvus,
    tls_milvus: TLSMilvus,
    milvus_admin: MilvusClient,
    closed_port: int,
    make_role: Callable[[], str],
    unique: Callable[[str], str],
) -> None:
    canary = uuid.uuid4().hex[:10]
    good_password, wrong_password = f"Good-{canary}-pw", f"Wrong-{canary}-pw"
    user, role = unique("canary"), make_role()
    milvus_admin.create_user(user, good_password)
    token = f"{ROOT_USERNAME}:{ROOT_PASSWORD}"  # root's token is in every log it reaches
    secrets = [good_password, wrong_password, f"{user}:{good_password}"]
    secrets += [base64.b64encode(s.encode()).decode() for s in secrets]
    debug = OperatorProcess(
        operator_kubeconfig,
        local_env.workdir / "operator-debug.log",
        {**OPERATOR_ENV, "MRBO_LOG_LEVEL": "DEBUG"},
    )
    operator.stop()  # every level of the log is scanned: run at DEBUG for this test
    try:
        debug.start()
        cluster.apply(
            secret(namespace, "root-token", token=token),
            secret(namespace, "good", username=user, password=good_password),
            secret(namespace, "wrong", username=user, password=wrong_password),
            secret(namespace, "as-token", token=f"{user}:{good_password}"),
            secret(namespace, "stranger-ca", **{"ca.crt": tls_milvus.other_ca_pem.decode()}),
            connection(namespace, "root-token", running_milvus.uri, "root-token"),
            connection(namespace, "good", running_milvus.uri, "good"),
            connection(namespace, "wrong", running_milvus.uri, "wrong"),
            connection(namespace, "token", running_milvus.uri, "as-token"),
            connection(namespace, "down", f"http://127.0.0.1:{closed_port}", "wrong"),
            connection(
                namespace,
                "tls",
                tls_milvus.server.uri,
                "wrong",
                tls={"caSecretRef": {"name": "stranger-ca"}, "serverName": "localhost"},
            ),
            binding(namespace, "works", user, role, connection_name="root-token"),
            binding(namespace, "denied", user, role, connection_name="good"),
            binding(namespace, "wrong", user, role, connection_name="wrong"),
            binding(namespace, "down", user, role, connection_name="down"),
            binding(namespace, "tls", user, role, connection_name="tls"),
        )
        wait_ready(cluster, namespace, "works")
        wait_ready(cluster, namespace, "denied", reason="PermissionDenied", status="False")
        wait_ready(cluster, namespace, "wrong", reason="Unauthenticated", status="False")
        wait_ready(cluster, namespace, "down", reason="MilvusUnavailable", status="False")
        wait_ready(cluster, namespace, "tls", reason="TLSError", status="False")
        wait_reason(cluster, "milvusconnections", namespace, "token", "Connected")
        # Removals too: one that succeeds, and failing ones let go with Orphan.
        cluster.kubectl("delete", "mrb", "works", f"-n={namespace}", "--timeout=60s")
        for name in ("denied", "wrong", "down", "tls"):
            orphan = '{"spec": {"deletionPolicy": "Orphan"}}'
            cluster.kubectl("patch", "mrb", name, f"-n={namespace}", "--type=merge", "-p", orphan)
        cluster.kubectl("delete", "mrb", "--all", f"-n={namespace}", "--timeout=60s")
    finally:
        debug.stop()
        operator.start()
    log = debug.log_text()
    assert "Merge-patching the status with" in log  # kopf's DEBUG lines are in it
    texts = {
        "operator log": log,
        "events": dump([e.to_dict() for e in cluster.core.list_namespaced_event(namespace).items]),
        "objects": cluster.kubectl(
            "get", "mrb,mconn", f"-n={namespace}", "-o=yaml", check=False
        ).stdout,
        "cluster objects": cluster.kubectl("get", "cmconn", "-o=yaml").stdout,
    }
    for where, text in texts.items():
        for leaked in secrets:
            assert leaked not in text, f"a secret leaked into the {where}"


def can_i(cluster: Cluster, kubeconfig: Path, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, f"--kubeconfig={kubeconfig}", check=False)
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize(
    ("verb", "what", "allowed"),
    [
        ("get", "secrets --all-namespaces", True),  # connections name Secrets anywhere
        ("list", "secrets --all-namespaces", False),
        ("create", "secrets -n default", False),
        ("update", "secrets -n default", False),
        ("delete", "secrets -n default", False),
        ("patch", "milvusrolebindings.rbac.milvus.io --all-namespaces", True),
        ("create", "milvusrolebindings.rbac.milvus.io -n default", False),
        ("delete", "milvusrolebindings.rbac.milvus.io -n default", False),
        ("create", "milvusconnections.rbac.milvus.io -n default", False),
        ("delete", "clustermilvusconnections.rbac.milvus.io", False),
        ("watch", "clustermilvusconnections.rbac.milvus.io", True),
        ("list", "namespaces", True),
        ("delete", "namespaces", False),
        ("patch", "namespaces", False),
        ("list", "pods --all-namespaces", False),
        ("get", "configmaps -n default", False),
        ("create", "events -n default", True),
        ("update", f"leases.coordination.k8s.io -n {OPERATOR_NAMESPACE}", True),
        ("update", "leases.coordination.k8s.io -n default", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
        ("create", "serviceaccounts/token -n default", False),
        ("impersonate", "users", False),
    ],
)
def test_operator_identity_holds_only_what_it_needs(
    cluster: Cluster, operator_kubeconfig: Path, verb: str, what: str, allowed: bool
) -> None:
    assert can_i(cluster, operator_kubeconfig, verb, *what.split()) is allowed


def test_namespaced_mode_reads_secrets_only_in_its_namespaces(
    cluster: Cluster, local_env: LocalEnvironment
) -> None:
    watched = f"watched-{uuid.uuid4().hex[:8]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": watched}})
    kubeconfig = operator_identity(cluster, local_env.workdir, f"mrbo-{watched}", (watched,))
    assert can_i(cluster, kubeconfig, "get", "secrets", f"-n={watched}")
    assert not can_i(cluster, kubeconfig, "get", "secrets", "-n=default")
    assert not can_i(cluster, kubeconfig, "get", "secrets", "--all-namespaces")
    assert not can_i(cluster, kubeconfig, "list", "milvusrolebindings.rbac.milvus.io", "-A")
    assert can_i(cluster, kubeconfig, "list", "milvusrolebindings.rbac.milvus.io", f"-n={watched}")
