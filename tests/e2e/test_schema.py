"""The API server refuses invalid MilvusRoleBindings at apply time, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Cluster, binding

pytestmark = pytest.mark.e2e


def spec_with(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "connectionRef": {"name": "milvus"},
        "username": "alice",
        "roleName": "reader",
    }
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    return spec


INVALID = [
    # (case id, spec changes, the field the error must name)
    ("empty username", {"username": ""}, "spec.username"),
    ("username with leading digit", {"username": "1alice"}, "spec.username"),
    ("username with leading underscore", {"username": "_alice"}, "spec.username"),
    ("username with dash", {"username": "al-ice"}, "spec.username"),
    ("username with dot", {"username": "al.ice"}, "spec.username"),
    ("username with space", {"username": "al ice"}, "spec.username"),
    ("username with dollar", {"username": "alice$"}, "spec.username"),
    ("non-ASCII username", {"username": "ålice"}, "spec.username"),
    ("username with control character", {"username": "ali\tce"}, "spec.username"),
    ("username of 33 characters", {"username": "a" * 33}, "spec.username"),
    ("missing username", {"username": None}, "spec.username"),
    ("empty role", {"roleName": ""}, "spec.roleName"),
    ("role with leading digit", {"roleName": "1reader"}, "spec.roleName"),
    ("role with dash", {"roleName": "read-er"}, "spec.roleName"),
    ("role with dot", {"roleName": "read.er"}, "spec.roleName"),
    ("role with space", {"roleName": "read er"}, "spec.roleName"),
    ("non-ASCII role", {"roleName": "rëader"}, "spec.roleName"),
    ("role of 256 characters", {"roleName": "r" * 256}, "spec.roleName"),
    ("missing role", {"roleName": None}, "spec.roleName"),
    ("role that is a number", {"roleName": 7}, "spec.roleName"),
    (
        "connection name with capitals",
        {"connectionRef": {"name": "Milvus_Prod"}},
        "spec.connectionRef.name",
    ),
    ("missing connectionRef", {"connectionRef": None}, "spec.connectionRef"),
    (
        "connectionRef to another namespace",
        {"connectionRef": {"name": "m", "namespace": "x"}},
        "spec.connectionRef.namespace",
    ),
    ("unknown deletionPolicy", {"deletionPolicy": "Later"}, "spec.deletionPolicy"),
    ("zero timeout", {"timeoutSeconds": 0}, "spec.timeoutSeconds"),
    ("timeout over ten minutes", {"timeoutSeconds": 601}, "spec.timeoutSeconds"),
    ("timeout as text", {"timeoutSeconds": "ten"}, "spec.timeoutSeconds"),
]

VALID = [
    ("username of 32 characters", {"username": "a" * 32}),
    ("role of 255 characters", {"roleName": "_" + "r" * 254}),
    ("role with dollar and underscore", {"roleName": "_read$er_1"}),
    ("orphan policy and a timeout", {"deletionPolicy": "Orphan", "timeoutSeconds": 600}),
]


@pytest.mark.parametrize(
    ("changes", "field"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_binding_is_rejected_naming_the_field(
    cluster: Cluster, namespace: str, changes: dict[str, Any], field: str
) -> None:
    obj = binding(namespace, "invalid", "alice", "reader")
    obj["spec"] = spec_with(**changes)
    result = cluster.kubectl(
        "apply", "--validate=strict", "-f", "-", stdin=yaml.safe_dump(obj), check=False
    )
    assert result.returncode != 0, f"accepted: {obj['spec']}"
    assert field in result.stderr, result.stderr
    assert cluster.binding(namespace, "invalid") is None


@pytest.mark.parametrize("changes", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_names_at_the_limits_are_accepted(
    cluster: Cluster, namespace: str, changes: dict[str, Any]
) -> None:
    obj = binding(namespace, "at-the-limit", "alice", "reader")
    obj["spec"] = spec_with(**changes)
    cluster.apply(obj)  # raises with kubectl's message if refused
    assert cluster.binding(namespace, "at-the-limit") is not None
    cluster.kubectl("delete", "mrb", "at-the-limit", f"-n={namespace}", "--wait=false")
