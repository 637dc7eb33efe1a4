"""Two replicas: only the Lease holder acts; the standby takes over when the holder dies."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable

import pytest
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv import LocalEnvironment, processes
from tests.conftest import roles_of
from tests.e2e.conftest import OPERATOR_ENV, Cluster, OperatorProcess, binding, eventually
from tests.e2e.test_bindings import wait_ready

pytestmark = pytest.mark.e2e


def calls_in(log: str, namespace: str) -> int:
    return len(
        re.findall(
            rf"^\[{namespace}/[^\]]+\] (AddUserToRole|RemoveUserFromRole)\(", log, re.MULTILINE
        )
    )


def probe(replica: OperatorProcess, path: str) -> tuple[int, str]:
    url = f"http://{replica.env['MRBO_HEALTH_LISTEN']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, str(json.loads(resp.read())["status"])
    except urllib.error.HTTPError as err:
        return err.code, str(json.loads(err.read())["status"])


def test_only_the_leader_acts_and_the_standby_takes_over(
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    operator: OperatorProcess,
    local_env: LocalEnvironment,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
) -> None:
    env = {
        **OPERATOR_ENV,
        "MRBO_LEADER_ELECTION": "true",
        "MRBO_LEASE_NAME": f"e2e-{uuid.uuid4().hex[:8]}",
        "MRBO_LEASE_DURATION_SECONDS": "4",
        "MRBO_LEASE_RENEW_SECONDS": "1",
    }
    replicas = [
        OperatorProcess(
            operator.kubeconfig,
            local_env.workdir / f"replica-{i}.log",
            {**env, "MRBO_HEALTH_LISTEN": f"127.0.0.1:{processes.free_port()}"},
        )
        for i in range(2)
    ]
    users, role = [make_user() for _ in range(6)], make_role()
    operator.stop()  # the session's operator runs without election
    try:
        for replica in replicas:
            replica.start()
        leader = eventually(
            lambda: next((r for r in replicas if "holds lease" in r.log_text()), None),
            "one replica to hold the lease",
            30,
        )
        standby = next(r for r in replicas if r is not leader)
        assert "standing by" in standby.log_text()
        # A standby passes its probes: else the kubelet restarts it, and rollouts never end.
        assert probe(standby, "/healthz") == (200, "alive")
        assert probe(standby, "/readyz") == (200, "standby")

        cluster.apply(*[binding(namespace, f"b{i}", users[i], role) for i in range(3)])
        for i in range(3):
            wait_ready(cluster, namespace, f"b{i}")
        assert calls_in(leader.log_text(), namespace) == 3  # each call made exactly once
        assert calls_in(standby.log_text(), namespace) == 0

        leader.kill()
        killed = time.monotonic()
        eventually(lambda: "holds lease" in standby.log_text(), "the standby to take over", 30)
        eventually(lambda: probe(standby, "/readyz") == (200, "ready"), "the new leader ready")
        print(f"standby ready as leader {time.monotonic() - killed:.1f}s after SIGKILL (lease 4s)")
        cluster.apply(*[binding(namespace, f"b{i}", users[i], role) for i in range(3, 6)])
        for i in range(3, 6):
            wait_ready(cluster, namespace, f"b{i}")
        assert calls_in(standby.log_text(), namespace) >= 3
        assert all(roles_of(milvus_admin, user) == {role} for user in users)
    finally:
        for replica in replicas:
            replica.stop()
        operator.start()
