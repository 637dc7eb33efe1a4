"""The operator's own writes (kubeclient.KubeWriter) against the real API server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from milvus_rbac_operator.kubeclient import KubeWriter, load_configuration
from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.e2e


def config_map(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found = cluster.kubectl("get", "configmap", name, f"-n={namespace}", "-o=json")
    return dict(json.loads(found.stdout))


async def outcome(patcher: KubeWriter, path: str, body: dict[str, Any]) -> int:
    """200, or the status of the ApiException the write raised."""
    try:
        await patcher.merge_patch(path, body)
    except ApiException as exc:
        return int(exc.status or 0)
    return 200


def test_a_write_lands_a_stale_one_conflicts_and_a_missing_object_is_not_found(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}}
    )
    version = config_map(cluster, namespace, "c")["metadata"]["resourceVersion"]
    path = f"/api/v1/namespaces/{namespace}/configmaps/c"

    def change(value: str) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": version, "annotations": {"a": value}}}

    async def writes() -> list[int]:
        patcher = KubeWriter(lambda: load_configuration(str(cluster.kubeconfig)))
        try:
            return [
                await outcome(patcher, path, change("first")),
                await outcome(patcher, path, change("stale")),  # the version moved on
                await outcome(patcher, f"{path}-missing", change("none")),
            ]
        finally:
            await patcher.close()

    assert asyncio.run(writes()) == [200, 409, 404]
    assert config_map(cluster, namespace, "c")["metadata"]["annotations"]["a"] == "first"


def test_a_rejected_token_logs_in_again_once_then_reports_401(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    admin["users"] = [{"name": u["name"], "user": {"token": "not-a-token"}} for u in admin["users"]]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(admin))
    logins = []

    def login() -> kubernetes.client.Configuration:
        logins.append(1)
        return load_configuration(str(kubeconfig))

    async def write() -> int:
        patcher = KubeWriter(login)
        try:
            return await outcome(patcher, f"/api/v1/namespaces/{namespace}/configmaps/c", {})
        finally:
            await patcher.close()

    assert asyncio.run(write()) == 401
    assert len(logins) == 2
