"""The admission policy (deploy/admission): a binding carries its finalizer and intent from birth.

The operator then makes one API write per grant (the status), and a binding that names no usable
connection is still deleted at once. Without the policy the operator writes both itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv import install_admission_policy, remove_admission_policy
from milvus_rbac_operator.inventory import INTENT_ANNOTATION
from tests.conftest import roles_of
from tests.e2e.conftest import (
    Cluster,
    OperatorProcess,
    binding,
    follow_binding,
    ready,
)
from tests.e2e.test_bindings import wait_gone, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("running_operator")]
FINALIZER = "rbac.milvus.io/finalizer"


@pytest.fixture
def admission_policy(cluster: Cluster) -> None:
    if not cluster.admission_policy:
        pytest.skip("this cluster serves no MutatingAdmissionPolicy (Kubernetes 1.36+)")


@pytest.fixture
def without_admission_policy(cluster: Cluster, admission_policy: None) -> Iterator[None]:
    """The policy taken away for one test (as on a cluster that does not serve it)."""
    try:
        remove_admission_policy(cluster.kubeconfig)
        yield
    finally:
        install_admission_policy(cluster.kubeconfig)


def is_granted(event: dict[str, Any]) -> bool:
    condition = ready(event["object"]) or {}
    return condition.get("status") == "True" and condition.get("reason") == "Granted"


def created_until_granted(
    cluster: Cluster, namespace: str, name: str, user: str, role: str
) -> list[dict[str, Any]]:
    """Apply a binding; every watch event of it from its creation to Ready=True Granted."""
    events = follow_binding(cluster, namespace, name, is_granted)
    cluster.apply(binding(namespace, name, user, role))
    return events()


def test_a_new_binding_comes_with_its_finalizer_and_intent_and_costs_one_write(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
    admission_policy: None,
) -> None:
    user, role = make_user(), make_role()
    seen = created_until_granted(cluster, namespace, "one-write", user, role)
    assert roles_of(milvus_admin, user) == {role}

    created = seen[0]["object"]
    assert seen[0]["type"] == "ADDED"
    assert created["metadata"]["finalizers"] == [FINALIZER]
    intent = json.loads(created["metadata"]["annotations"][INTENT_ANNOTATION])
    assert intent == {"by": "admission", "connection": "milvus", "roleName": role, "username": user}
    # Between the create and Ready: the status write alone, the metadata as admission left it.
    assert [e["type"] for e in seen] == ["ADDED", "MODIFIED"], [e["type"] for e in seen]
    granted = seen[-1]["object"]
    assert granted["metadata"]["finalizers"] == created["metadata"]["finalizers"]
    assert granted["metadata"]["annotations"] == created["metadata"]["annotations"]
    applied = {"connection": "milvus", "username": user, "roleName": role}
    assert granted["status"]["applied"] == applied

    cluster.kubectl("delete", "mrb", "one-write", f"-n={namespace}", "--timeout=60s")
    assert roles_of(milvus_admin, user) == set()


def test_an_intent_supplied_by_the_creator_is_replaced_at_admission(
    cluster: Cluster, namespace: str, admission_policy: None
) -> None:
    forged = binding(namespace, "forged", "alice", "reader", connection_name="absent")
    forged["metadata"]["annotations"] = {
        INTENT_ANNOTATION: '{"connection":"absent","roleName":"admin","username":"bob"}',
        "team": "a",
    }
    forged["metadata"]["finalizers"] = ["example.com/keep"]
    cluster.apply(forged)
    obj = cluster.binding(namespace, "forged")
    assert obj is not None
    meta = obj["metadata"]
    assert json.loads(meta["annotations"][INTENT_ANNOTATION])["username"] == "alice"
    assert meta["annotations"]["team"] == "a"
    assert meta["finalizers"] == ["example.com/keep", FINALIZER]
    cluster.kubectl(
        "patch",
        "mrb",
        "forged",
        f"-n={namespace}",
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":["' + FINALIZER + '"]}}',
    )
    cluster.kubectl("delete", "mrb", "forged", f"-n={namespace}", "--timeout=60s")


def test_a_binding_whose_connection_never_existed_is_deleted_at_once(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    admission_policy: None,
) -> None:
    cluster.apply(binding(namespace, "typo", "alice", "reader", connection_name="milvsu"))
    obj = wait_ready(cluster, namespace, "typo", reason="ConnectionNotFound", status="False")
    assert obj["metadata"]["finalizers"] == [FINALIZER]  # from admission
    assert "resStatus" not in obj["status"]  # no Milvus call was ever possible
    log_mark = len(operator.log_text())
    cluster.kubectl("delete", "mrb", "typo", f"-n={namespace}", "--timeout=30s")
    assert cluster.binding(namespace, "typo") is None
    assert "RemoveUserFromRole(alice, reader) not needed" in operator.log_text()[log_mark:]


def test_a_binding_deleted_before_its_first_reconcile_removes_what_it_may_have_added(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
    operator: OperatorProcess,
    admission_policy: None,
) -> None:
    """With the operator down, its intent is all there is: the removal is made all the same."""
    user, role = make_user(), make_role()
    milvus_admin.grant_role(user, role)  # as if the operator had added it and then crashed
    operator.stop()
    try:
        cluster.apply(binding(namespace, "early", user, role))
        cluster.kubectl("delete", "mrb", "early", f"-n={namespace}", "--wait=false")
    finally:
        operator.start()
    wait_gone(cluster, namespace, "early")
    assert roles_of(milvus_admin, user) == set()


def test_without_the_policy_the_operator_writes_the_finalizer_and_intent_itself(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
    without_admission_policy: None,
) -> None:
    user, role = make_user(), make_role()
    seen = created_until_granted(cluster, namespace, "self-claimed", user, role)
    assert roles_of(milvus_admin, user) == {role}
    assert not seen[0]["object"]["metadata"].get("finalizers")
    # The finalizer and the intent in one write, then the status.
    assert [e["type"] for e in seen] == ["ADDED", "MODIFIED", "MODIFIED"]
    claimed = seen[1]["object"]["metadata"]
    assert claimed["finalizers"] == [FINALIZER]
    intent = json.loads(claimed["annotations"][INTENT_ANNOTATION])
    assert intent == {"connection": "milvus", "roleName": role, "username": user}
    cluster.kubectl("delete", "mrb", "self-claimed", f"-n={namespace}", "--timeout=60s")
    assert roles_of(milvus_admin, user) == set()
