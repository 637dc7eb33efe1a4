"""What a ClusterMilvusConnection's policy allows, and which hosts the operator may dial."""

from __future__ import annotations

from typing import Any

import pytest

from milvus_rbac_operator import inventory, policy, reconcile
from milvus_rbac_operator.inventory import BindingRecord
from milvus_rbac_operator.model import (
    CLUSTER_CONNECTION,
    ConnectionRef,
    Operation,
    RolePair,
)

SHARED = ConnectionRef("shared", CLUSTER_CONNECTION)
TEAM_POLICY = {
    "allowedNamespaces": {
        "names": ["team-a", "team-b-*"],
        "selector": {"matchLabels": {"milvus-access": "shared"}},
    },
    "allowedRoles": ["reader", "writer_*"],
    "deniedRoles": ["writer_ops"],
    "allowedUsers": ["svc_*"],
}


def verdict(
    spec_policy: dict[str, Any],
    namespace: str = "team-a",
    user: str = "svc_app",
    role: str = "reader",
    labels: dict[str, str] | None = None,
) -> str | None:
    rules = policy.policy_from_spec({"policy": spec_policy})
    return policy.forbidden(rules, "shared", namespace, labels or {}, user, role)


@pytest.mark.parametrize(
    ("namespace", "labels", "user", "role", "rule"),
    [
        pytest.param("team-a", {}, "svc_app", "reader", None, id="named namespace, allowed role"),
        pytest.param("team-b-dev", {}, "svc_app", "writer_x", None, id="namespace glob"),
        pytest.param(
            "other", {"milvus-access": "shared"}, "svc_app", "reader", None, id="label selector"
        ),
        pytest.param("other", {}, "svc_app", "reader", "allowedNamespaces", id="namespace outside"),
        pytest.param(
            "other",
            {"milvus-access": "private"},
            "svc_app",
            "reader",
            "allowedNamespaces",
            id="label with another value",
        ),
        pytest.param(
            "team-a", {}, "svc_app", "writer_ops", "deniedRoles", id="denied beats allowed"
        ),
        pytest.param("team-a", {}, "svc_app", "admin", "admin", id="admin needs an exact entry"),
        pytest.param("team-a", {}, "svc_app", "ops", "allowedRoles", id="role not allowed"),
        pytest.param("team-a", {}, "alice", "reader", "allowedUsers", id="user not allowed"),
    ],
)
def test_policy_names_the_rule_that_refuses(
    namespace: str, labels: dict[str, str], user: str, role: str, rule: str | None
) -> None:
    refusal = verdict(TEAM_POLICY, namespace, user, role, labels)
    if rule is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert rule in refusal
        assert "ClusterMilvusConnection shared" in refusal


def test_no_allowed_namespaces_allows_no_namespace() -> None:
    refusal = verdict({})
    assert refusal is not None
    assert "allowedNamespaces names: none" in refusal


def test_admin_is_denied_even_by_a_match_all_pattern() -> None:
    assert verdict({"allowedNamespaces": {"names": ["*"]}, "allowedRoles": ["*"]}, role="admin")


def test_admin_listed_by_name_is_allowed() -> None:
    allowed = {"allowedNamespaces": {"names": ["*"]}, "allowedRoles": ["admin"]}
    assert verdict(allowed, role="admin") is None


def test_roles_and_users_default_to_all_but_admin() -> None:
    assert verdict({"allowedNamespaces": {"names": ["team-a"]}}, user="bob", role="ops") is None


@pytest.mark.parametrize(
    ("expression", "labels", "matches"),
    [
        ({"key": "tier", "operator": "In", "values": ["gold"]}, {"tier": "gold"}, True),
        ({"key": "tier", "operator": "In", "values": ["gold"]}, {"tier": "iron"}, False),
        ({"key": "tier", "operator": "NotIn", "values": ["gold"]}, {}, True),
        ({"key": "tier", "operator": "Exists"}, {"tier": ""}, True),
        ({"key": "tier", "operator": "DoesNotExist"}, {"tier": "x"}, False),
    ],
)
def test_selector_match_expressions(
    expression: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    spec = {"allowedNamespaces": {"selector": {"matchExpressions": [expression]}}}
    assert (verdict(spec, namespace="any", labels=labels) is None) is matches


@pytest.mark.parametrize(
    ("uri", "allowed", "refused"),
    [
        ("http://milvus.db.svc:19530", ("*.svc",), False),
        ("http://milvus.db.svc.cluster.local:19530", ("*.svc", "*.svc.cluster.local"), False),
        ("http://127.0.0.1:19530", ("*.svc",), True),
        ("http://127.0.0.2:19530", ("127.0.0.1",), True),
        ("http://127.0.0.1:19530", ("127.0.0.1:19530",), False),
        ("http://127.0.0.1:8080", ("127.0.0.1:19530",), True),
        ("https://LOCALHOST:443", ("localhost",), False),
        ("http://[::1]:19530", ("[::1]",), False),
        ("http://metadata.google.internal", ("*.svc",), True),
        ("http://evil.svc.example.com:19530", ("*.svc",), True),
    ],
)
def test_allowed_hosts(uri: str, allowed: tuple[str, ...], refused: bool) -> None:
    assert (policy.host_refusal(uri, allowed) is not None) is refused


def test_host_refusal_names_host_port_and_setting() -> None:
    refusal = policy.host_refusal("http://127.0.0.2:19530", ("127.0.0.1",))
    assert refusal == (
        "host 127.0.0.2:19530 is not in the operator's allowed hosts "
        "(MRBO_ALLOWED_HOSTS: 127.0.0.1)"
    )


def test_forbidden_pair_is_not_added_and_its_grant_is_removed() -> None:
    pair = RolePair(SHARED, "svc_app", "admin")
    calls = reconcile.plan_reconcile(pair, [pair], frozenset({"root"}), forbidden=True)
    assert [(c.operation, c.pair) for c in calls] == [(Operation.REMOVE_USER_FROM_ROLE, pair)]


def test_forbidden_pair_with_nothing_applied_makes_no_call() -> None:
    pair = RolePair(SHARED, "svc_app", "admin")
    assert reconcile.plan_reconcile(pair, [], frozenset({"root"}), forbidden=True) == []


def binding(reason: str, check: str = "", deleting: bool = False) -> BindingRecord:
    pair = RolePair(SHARED, "svc_app", "reader")
    return BindingRecord(
        "team-a",
        "b",
        "uid",
        1,
        pair,
        pair,
        deleting,
        ready=reason == "Granted",
        ready_reason=reason,
        policy_check=check,
    )


@pytest.mark.parametrize(
    ("record", "allowed", "wanted"),
    [
        pytest.param(binding("Granted"), False, True, id="granted but now forbidden"),
        pytest.param(binding("Forbidden"), True, True, id="forbidden but now allowed"),
        pytest.param(binding("Granted"), True, False, id="granted and allowed"),
        pytest.param(binding("Forbidden"), False, False, id="forbidden and forbidden"),
        pytest.param(binding("Granted", check="d1"), False, False, id="already requested"),
        pytest.param(binding("Granted", deleting=True), False, False, id="being deleted"),
    ],
)
def test_policy_check_is_requested_only_when_the_verdict_changed(
    record: BindingRecord, allowed: bool, wanted: bool
) -> None:
    assert inventory.needs_policy_check(record, allowed, "d1") is wanted


def test_a_binding_the_policy_forbids_does_not_keep_a_grant_for_another() -> None:
    pair = RolePair(SHARED, "svc_app", "reader")
    other = binding("Granted")
    endpoints = {("", "shared"): "http://milvus:19530/"}
    kept = inventory.sharers(pair, "team-b", "uid-x", [other], endpoints, lambda _: True)
    dropped = inventory.sharers(pair, "team-b", "uid-x", [other], endpoints, lambda _: False)
    assert kept.holding == ("team-a/b",)
    assert dropped == inventory.Sharers()


def test_applied_pair_through_a_cluster_connection_round_trips() -> None:
    pair = RolePair(SHARED, "svc_app", "reader")
    shown = pair.to_status()
    assert shown["connectionKind"] == CLUSTER_CONNECTION
    assert RolePair.from_status(shown) == pair
    namespaced = RolePair(ConnectionRef("milvus"), "alice", "reader")
    assert "connectionKind" not in namespaced.to_status()
    assert RolePair.from_status(namespaced.to_status()) == namespaced


def test_cluster_connection_key_has_no_namespace() -> None:
    assert SHARED.key("team-a") == ("", "shared")
    assert ConnectionRef("milvus").key("team-a") == ("team-a", "milvus")
