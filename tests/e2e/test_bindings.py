"""MilvusRoleBinding behaviour, end to end: kubectl -> kube-apiserver -> operator -> Milvus."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv import LocalEnvironment
from milvus_rbac_operator.devenv.milvus_server import EmbeddedMilvus
from milvus_rbac_operator.inventory import INTENT_ANNOTATION
from tests.conftest import roles_of
from tests.e2e.conftest import (
    OPERATOR_ENV,
    Cluster,
    OperatorProcess,
    binding,
    connection,
    dump,
    eventually,
    operator_identity,
    ready,
    secret,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("running_operator")]


def wait_ready(
    cluster: Cluster,
    namespace: str,
    name: str,
    reason: str = "Granted",
    status: str = "True",
    timeout: float = 60,
) -> dict:
    def probe() -> dict | None:
        obj = cluster.binding(namespace, name)
        condition = ready(obj)
        if (
            not obj
            or not condition
            or (condition["status"], condition["reason"]) != (status, reason)
        ):
            return None
        # A condition about an older spec does not count.
        return obj if condition.get("observedGeneration") == obj["metadata"]["generation"] else None

    return eventually(probe, f"{namespace}/{name} Ready={status} reason {reason}", timeout)


def wait_gone(cluster: Cluster, namespace: str, name: str, timeout: float = 60) -> None:
    eventually(lambda: cluster.binding(namespace, name) is None, f"{name} to be gone", timeout)


def test_binding_grants_role_and_reports_ready(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    cluster.apply(binding(namespace, "alice-reader", user, role))
    cluster.kubectl(
        "wait", "--for=condition=Ready", "mrb/alice-reader", f"-n={namespace}", "--timeout=60s"
    )
    assert roles_of(milvus_admin, user) == {role}

    table = cluster.kubectl("get", "mrb", f"-n={namespace}").stdout.split("\n")
    assert table[0].split() == ["NAME", "USER", "ROLE", "CONNECTION", "READY", "REASON", "AGE"]
    assert table[1].split()[:6] == ["alice-reader", user, role, "milvus", "True", "Granted"]

    obj = cluster.binding(namespace, "alice-reader")
    assert obj is not None
    status = obj["status"]
    assert status["applied"] == {"connection": "milvus", "username": user, "roleName": role}
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    res = status["resStatus"]
    assert (res["operation"], res["username"], res["roleName"]) == ("AddUserToRole", user, role)
    assert (res["code"], res["errorCode"], res["reason"]) == (0, "Success", "")
    assert res["time"]
    assert "rbac.milvus.io/finalizer" in obj["metadata"]["finalizers"]

    events = eventually(  # Events are posted in the background
        lambda: cluster.events(namespace, "alice-reader"), "the Granted event", 10
    )
    assert [(e.type, e.reason) for e in events] == [("Normal", "Granted")]
    assert "code 0" in events[0].message
    described = cluster.kubectl("describe", "mrb", "alice-reader", f"-n={namespace}").stdout
    assert "Granted" in described


def test_both_kinds_are_listed_in_the_milvus_rbac_category(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
) -> None:
    listed = cluster.kubectl("get", "milvus-rbac", f"-n={namespace}", "-o=name").stdout
    assert "milvusconnection.rbac.milvus.io/milvus" in listed


@pytest.mark.parametrize("field", ["roleName", "username"])
def test_changing_spec_removes_old_grant_first(
    field: str,
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
    operator: OperatorProcess,
) -> None:
    user, role = make_user(), make_role()
    cluster.apply(binding(namespace, "moving", user, role))
    wait_ready(cluster, namespace, "moving")
    new_value = make_role() if field == "roleName" else make_user()
    new_user, new_role = (user, new_value) if field == "roleName" else (new_value, role)
    log_mark = len(operator.log_text())

    cluster.kubectl(
        "patch",
        "mrb",
        "moving",
        f"-n={namespace}",
        "--type=merge",
        "-p",
        f'{{"spec": {{"{field}": "{new_value}"}}}}',
    )

    def moved() -> dict | None:
        obj = cluster.binding(namespace, "moving")
        applied = (obj or {}).get("status", {}).get("applied")
        return (
            obj
            if applied == {"connection": "milvus", "username": new_user, "roleName": new_role}
            else None
        )

    obj = eventually(moved, "status.applied to follow the spec")
    assert roles_of(milvus_admin, new_user) == {new_role}
    old_roles = roles_of(milvus_admin, user)
    assert role not in old_roles if field == "roleName" else old_roles == set()
    assert ready(obj)["status"] == "True"
    assert ready(obj)["observedGeneration"] == obj["metadata"]["generation"] == 2
    # RemoveUserFromRole of the old pair strictly before AddUserToRole of the new one.
    log = operator.log_text()[log_mark:]
    removed = log.index(f"RemoveUserFromRole({user}, {role}): code 0")
    added = log.index(f"AddUserToRole({new_user}, {new_role}): code 0")
    assert removed < added

    def granted_twice() -> list[str] | None:  # Events are posted in the background
        reasons = [e.reason for e in cluster.events(namespace, "moving")]
        return reasons if reasons.count("Granted") == 2 else None

    reasons = eventually(granted_twice, "a second Granted event", 10)
    assert reasons.count("Revoked") == 1
    assert reasons.count("Granted") == 2


def test_delete_removes_grant_and_releases_finalizer(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    cluster.apply(binding(namespace, "short-lived", user, role))
    wait_ready(cluster, namespace, "short-lived")
    cluster.kubectl("delete", "mrb", "short-lived", f"-n={namespace}", "--timeout=60s")
    assert cluster.binding(namespace, "short-lived") is None
    assert roles_of(milvus_admin, user) == set()


def test_a_binding_stripped_of_its_intent_still_removes_its_grant_on_delete(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    cluster.apply(binding(namespace, "stripped", user, role))
    wait_ready(cluster, namespace, "stripped")
    # What a hand or a tool that replaces metadata may do to the operator's annotation; the
    # grant is still in status.applied, and the finalizer must stay until it is removed.
    cluster.kubectl("annotate", "mrb", "stripped", f"-n={namespace}", f"{INTENT_ANNOTATION}-")
    cluster.kubectl("delete", "mrb", "stripped", f"-n={namespace}", "--timeout=60s")
    assert cluster.binding(namespace, "stripped") is None
    assert roles_of(milvus_admin, user) == set()


def test_finalizer_holds_deletion_while_milvus_is_down(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    running_milvus: EmbeddedMilvus,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    cluster.apply(binding(namespace, "held", user, role))
    wait_ready(cluster, namespace, "held")
    running_milvus.stop()
    try:
        cluster.kubectl("delete", "mrb", "held", f"-n={namespace}", "--wait=false")

        def held_with_reason() -> dict | None:
            obj = cluster.binding(namespace, "held")
            condition = ready(obj)
            if obj and condition and condition["reason"] == "MilvusUnavailable":
                return obj
            return None

        obj = eventually(held_with_reason, "the held deletion to report MilvusUnavailable")
        assert obj["metadata"].get("deletionTimestamp")
        assert obj["metadata"]["finalizers"] == ["rbac.milvus.io/finalizer"]
        assert "deletionPolicy: Orphan" in ready(obj)["message"]
        assert obj["status"]["resStatus"]["operation"] == "RemoveUserFromRole"
    finally:
        running_milvus.start()
    wait_gone(cluster, namespace, "held")
    assert roles_of(milvus_admin, user) == set()


def test_operator_restart_resumes_from_status_applied(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    operator: OperatorProcess,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role, later_role = make_user(), make_role(), make_role()
    created_while_down_user = make_user()
    cluster.apply(binding(namespace, "survivor", user, role))
    wait_ready(cluster, namespace, "survivor")
    operator.stop()
    try:
        cluster.kubectl(
            "patch",
            "mrb",
            "survivor",
            f"-n={namespace}",
            "--type=merge",
            "-p",
            f'{{"spec": {{"roleName": "{later_role}"}}}}',
        )
        cluster.apply(binding(namespace, "newcomer", created_while_down_user, role))
    finally:
        log_mark = len(operator.log_text())
        operator.start()
    wait_ready(cluster, namespace, "newcomer")
    eventually(
        lambda: roles_of(milvus_admin, user) == {later_role},
        "the edit made while the operator was down to be applied",
    )
    obj = wait_ready(cluster, namespace, "survivor")
    assert obj["status"]["applied"]["roleName"] == later_role
    assert roles_of(milvus_admin, created_while_down_user) == {role}
    # The edit is reconciled once: kopf's resume handler, mixed into the update, leaves it be.
    log = operator.log_text()[log_mark:]
    assert log.count(f"RemoveUserFromRole({user}, {role}): code 0") == 1
    assert log.count(f"AddUserToRole({user}, {later_role}): code 0") == 1


@pytest.mark.parametrize("missing", ["user", "role"])
def test_missing_user_or_role_converges_once_created(
    missing: str,
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    unique: Callable[[str], str],
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user = unique("later_user") if missing == "user" else make_user()
    role = unique("later_role") if missing == "role" else make_role()
    reason = "UserNotFound" if missing == "user" else "RoleNotFound"
    cluster.apply(binding(namespace, "early", user, role))
    obj = wait_ready(cluster, namespace, "early", reason=reason, status="False")
    res = obj["status"]["resStatus"]
    assert (res["operation"], res["code"]) == ("AddUserToRole", 65535)
    assert f"not found the {missing}" in res["reason"]
    assert f"not found the {missing}" in ready(obj)["message"]
    assert obj["status"].get("applied") is None
    eventually(  # Events are posted in the background
        lambda: any(
            e.reason == reason and e.type == "Warning" for e in cluster.events(namespace, "early")
        ),
        f"a {reason} Warning event",
        10,
    )
    # Retries rewrite resStatus, but the condition's transition time stays where it was.
    first_try, since = res["time"], ready(obj)["lastTransitionTime"]
    retried = eventually(
        lambda: (lambda o: o if o["status"]["resStatus"]["time"] != first_try else None)(
            cluster.binding(namespace, "early")
        ),
        "a retry at the slow pace",
        timeout=30,
    )
    assert ready(retried)["lastTransitionTime"] == since
    assert ready(retried)["reason"] == reason

    if missing == "user":
        milvus_admin.create_user(user, "created-later")
    else:
        milvus_admin.create_role(role)
    wait_ready(cluster, namespace, "early")  # nobody touched the binding
    assert roles_of(milvus_admin, user) == {role}


def test_unreachable_milvus_reports_and_converges_when_back(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    running_milvus: EmbeddedMilvus,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    running_milvus.stop()
    try:
        cluster.apply(binding(namespace, "patient", user, role))
        obj = wait_ready(cluster, namespace, "patient", reason="MilvusUnavailable", status="False")
        assert obj["status"]["resStatus"]["code"] == 2
        assert "retrying" in ready(obj)["message"]
    finally:
        running_milvus.start()
    wait_ready(cluster, namespace, "patient")
    assert roles_of(milvus_admin, user) == {role}


def test_connection_to_closed_port_is_unavailable(
    cluster: Cluster,
    namespace: str,
    closed_port: int,
) -> None:
    cluster.apply(
        secret(namespace, "creds", username="root", password="Milvus"),
        connection(namespace, "nowhere", f"http://127.0.0.1:{closed_port}", "creds"),
        binding(namespace, "unreachable", "alice", "reader", connection_name="nowhere"),
    )
    wait_ready(cluster, namespace, "unreachable", reason="MilvusUnavailable", status="False")
    eventually(
        lambda: (
            (ready(cluster.get("milvusconnections", namespace, "nowhere")) or {}).get("reason")
            == "MilvusUnavailable"
        ),
        "the connection to report MilvusUnavailable",
    )


def test_timeout_seconds_bounds_each_call(
    cluster: Cluster,
    namespace: str,
    black_hole: int,
) -> None:
    cluster.apply(
        secret(namespace, "creds", username="root", password="Milvus"),
        connection(namespace, "silent", f"http://127.0.0.1:{black_hole}", "creds"),
        binding(
            namespace, "bounded", "alice", "reader", connection_name="silent", timeoutSeconds=2
        ),
    )
    obj = wait_ready(cluster, namespace, "bounded", reason="MilvusUnavailable", status="False")
    assert "no answer from Milvus within 2s" in ready(obj)["message"]
    assert obj["status"]["resStatus"]["errorCode"] == "Timeout"


def test_wrong_credentials_are_reported_and_never_leak(
    cluster: Cluster,
    namespace: str,
    running_milvus: EmbeddedMilvus,
    operator: OperatorProcess,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    password = "Leak-Canary-7f3a9q"
    user, role = make_user(), make_role()
    cluster.apply(
        secret(namespace, "bad-creds", username="root", password=password),
        connection(namespace, "wrong", running_milvus.uri, "bad-creds"),
        binding(namespace, "denied", user, role, connection_name="wrong"),
    )
    obj = wait_ready(cluster, namespace, "denied", reason="Unauthenticated", status="False")
    assert "credentials" in ready(obj)["message"]
    conn = eventually(
        lambda: (lambda c: c if (ready(c) or {}).get("reason") == "Unauthenticated" else None)(
            cluster.get("milvusconnections", namespace, "wrong")
        ),
        "the connection to report Unauthenticated",
    )
    assert "bad-creds" in ready(conn)["message"]

    everything = [
        dump(obj),
        dump(conn),
        operator.log_text(),
        dump([e.to_dict() for e in cluster.core.list_namespaced_event(namespace).items]),
        cluster.kubectl("get", "mrb,mconn", f"-n={namespace}", "-o=yaml").stdout,
    ]
    for text in everything:
        assert password not in text

    # Fixing the Secret is enough: the cached client is rebuilt with the new credentials.
    cluster.apply(secret(namespace, "bad-creds", username="root", password="Milvus"))
    wait_ready(cluster, namespace, "denied")


def test_deleting_binding_whose_user_or_role_was_dropped_completes(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    dropped_user, kept_role = make_user(), make_role()
    kept_user, dropped_role = make_user(), make_role()
    cluster.apply(
        binding(namespace, "user-dropped", dropped_user, kept_role),
        binding(namespace, "role-dropped", kept_user, dropped_role),
    )
    wait_ready(cluster, namespace, "user-dropped")
    wait_ready(cluster, namespace, "role-dropped")
    milvus_admin.drop_user(dropped_user)
    milvus_admin.revoke_role(kept_user, dropped_role)  # 2.3.5 refuses to drop a role in use
    milvus_admin.drop_role(dropped_role)
    cluster.kubectl(
        "delete", "mrb", "user-dropped", "role-dropped", f"-n={namespace}", "--timeout=60s"
    )
    assert cluster.binding(namespace, "user-dropped") is None
    assert cluster.binding(namespace, "role-dropped") is None


def test_orphan_policy_leaves_the_grant(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    cluster.apply(binding(namespace, "orphaned", user, role, deletionPolicy="Orphan"))
    wait_ready(cluster, namespace, "orphaned")
    cluster.kubectl("delete", "mrb", "orphaned", f"-n={namespace}", "--timeout=60s")
    assert roles_of(milvus_admin, user) == {role}


def test_switching_to_orphan_lets_a_held_deletion_go(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    running_milvus: EmbeddedMilvus,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    """The documented way out when Milvus is gone for good."""
    user, role = make_user(), make_role()
    cluster.apply(binding(namespace, "stranded", user, role))
    wait_ready(cluster, namespace, "stranded")
    running_milvus.stop()
    try:
        cluster.kubectl("delete", "mrb", "stranded", f"-n={namespace}", "--wait=false")
        wait_ready(cluster, namespace, "stranded", reason="MilvusUnavailable", status="False")
        cluster.kubectl(
            "patch",
            "mrb",
            "stranded",
            f"-n={namespace}",
            "--type=merge",
            "-p",
            '{"spec": {"deletionPolicy": "Orphan"}}',
        )
        wait_gone(cluster, namespace, "stranded")
    finally:
        running_milvus.start()
    assert roles_of(milvus_admin, user) == {role}  # left behind, as asked


def test_binding_for_root_is_refused_without_any_milvus_call(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    operator: OperatorProcess,
    make_role: Callable[[], str],
) -> None:
    role = make_role()
    milvus_admin.grant_role("root", role)
    before = roles_of(milvus_admin, "root")
    cluster.apply(
        binding(namespace, "root-grab", "root", "admin"),
        binding(namespace, "root-existing", "root", role),
    )
    for name in ("root-grab", "root-existing"):
        obj = wait_ready(cluster, namespace, name, reason="ProtectedUser", status="False")
        assert "resStatus" not in obj["status"]
        assert "never adds or removes" in ready(obj)["message"]
    cluster.kubectl(
        "delete", "mrb", "root-grab", "root-existing", f"-n={namespace}", "--timeout=60s"
    )
    assert roles_of(milvus_admin, "root") == before
    assert f"({'root'}, " not in operator.log_text()  # no AddUserToRole/RemoveUserFromRole(root,
    milvus_admin.revoke_role("root", role)


def test_missing_connection_then_created_converges(
    cluster: Cluster,
    namespace: str,
    running_milvus: EmbeddedMilvus,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    user, role = make_user(), make_role()
    cluster.apply(binding(namespace, "early", user, role, connection_name="late"))
    obj = wait_ready(cluster, namespace, "early", reason="ConnectionNotFound", status="False")
    assert f"MilvusConnection {namespace}/late not found" in ready(obj)["message"]

    cluster.apply(connection(namespace, "late", running_milvus.uri, "late-creds"))
    obj = wait_ready(cluster, namespace, "early", reason="SecretNotFound", status="False")
    assert f"Secret {namespace}/late-creds" in ready(obj)["message"]

    cluster.apply(secret(namespace, "late-creds", username="root", password="Milvus"))
    wait_ready(cluster, namespace, "early")
    assert roles_of(milvus_admin, user) == {role}


def test_connection_reports_ready_with_server_version(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
) -> None:
    conn = eventually(
        lambda: (lambda c: c if (ready(c) or {}).get("status") == "True" else None)(
            cluster.get("milvusconnections", namespace, milvus_connection)
        ),
        "connection Ready",
    )
    assert conn["status"]["serverVersion"].startswith("v2.3.5")
    assert ready(conn)["reason"] == "Connected"
    table = cluster.kubectl("get", "mconn", f"-n={namespace}").stdout.split("\n")
    assert table[0].split() == ["NAME", "URI", "READY", "REASON", "VERSION", "AGE"]
    assert table[1].split()[2:5] == ["True", "Connected", conn["status"]["serverVersion"]]


def test_run_watches_only_the_selected_namespaces(
    cluster: Cluster,
    milvus_admin: MilvusClient,
    running_milvus: EmbeddedMilvus,
    operator: OperatorProcess,
    local_env: LocalEnvironment,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    watched, ignored = f"watched-{uuid.uuid4().hex[:8]}", f"ignored-{uuid.uuid4().hex[:8]}"
    user, role = make_user(), make_role()
    for ns in (watched, ignored):
        cluster.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            secret(ns, "milvus-root", username="root", password="Milvus"),
            connection(ns, "milvus", running_milvus.uri, "milvus-root"),
        )
    # Namespaced mode under its own identity: the namespaced rules bound in `watched` only.
    identity = f"mrbo-{watched}"
    kubeconfig = operator_identity(cluster, local_env.workdir, identity, namespaces=(watched,))
    operator.stop()
    scoped = OperatorProcess(
        kubeconfig,
        local_env.workdir / "operator-scoped.log",
        {**OPERATOR_ENV, "MRBO_OPERATOR_NAMESPACE": identity},
        extra_args=(f"--namespace={watched}",),
    )
    try:
        scoped.start()
        for ns in (watched, ignored):
            cluster.apply(binding(ns, "scoped", user, role))
        wait_ready(cluster, watched, "scoped")
        time.sleep(3)  # the ignored namespace gets nothing from it: no write at all
        untouched = cluster.binding(ignored, "scoped")
        assert untouched is not None
        assert not untouched.get("status", {}).get("conditions")
        writers = {entry["manager"] for entry in untouched["metadata"]["managedFields"]}
        assert writers == {"kubectl-client-side-apply"}, writers
    finally:
        scoped.stop()
        operator.start()
    wait_ready(cluster, ignored, "scoped")  # the all-namespaces operator picks it up
