"""`milvus-rbac-operator dev`: all local, the operator in the foreground; Ctrl-C stops it all."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import yaml
from pymilvus import MilvusClient

from milvus_rbac_operator.cli import run_operator
from milvus_rbac_operator.devenv import REPO_ROOT, LocalEnvironment
from milvus_rbac_operator.devenv.controlplane import kubectl
from milvus_rbac_operator.devenv.milvus_server import ROOT_PASSWORD, ROOT_USERNAME
from milvus_rbac_operator.settings import Settings

EXAMPLES = REPO_ROOT / "deploy" / "examples"
# What the README walkthrough binds; created in the embedded Milvus so it works at once.
WALKTHROUGH_USERS = ("alice",)
WALKTHROUGH_ROLES = ("reader", "writer")


def _say(line: str) -> None:
    print(f"[dev] {line}", flush=True)


def seed_milvus(uri: str) -> None:
    client = MilvusClient(uri=uri, token=f"{ROOT_USERNAME}:{ROOT_PASSWORD}")
    try:
        existing = set(client.list_users())
        for user in WALKTHROUGH_USERS:
            if user not in existing:
                client.create_user(user, f"{user}-walkthrough")
        roles = set(client.list_roles())
        for role in WALKTHROUGH_ROLES:
            if role not in roles:
                client.create_role(role)
    finally:
        client.close()


def example_connection(uri: str) -> str:
    """The example Secret and MilvusConnection, pointed at the embedded Milvus."""
    documents = list(yaml.safe_load_all((EXAMPLES / "connection.yaml").read_text()))
    for document in documents:
        if document.get("kind") == "MilvusConnection":
            document["spec"]["uri"] = uri
    return yaml.safe_dump_all(documents)


# The embedded Milvus is on loopback, which the operator's default allowed hosts leave out.
DEV_ALLOWED_HOSTS = ("127.0.0.1", "localhost")


def run_dev(settings: Settings, workdir: str | None) -> int:
    if "MRBO_ALLOWED_HOSTS" not in os.environ:
        settings = dataclasses.replace(settings, allowed_hosts=DEV_ALLOWED_HOSTS)
    env = LocalEnvironment(Path(workdir) if workdir else None, say=_say)
    try:
        env.start()
        assert env.milvus is not None
        seed_milvus(env.milvus.uri)
        env.kubectl("apply", "-f", "-", stdin=example_connection(env.milvus.uri))
        bin_dir = Path(kubectl()).parent
        path = f"{bin_dir}:$PATH" if str(bin_dir) not in os.environ.get("PATH", "") else "$PATH"
        _say(
            f"Milvus {env.milvus.uri} (user root, the embedded default password); "
            f"users {', '.join(WALKTHROUGH_USERS)} and roles {', '.join(WALKTHROUGH_ROLES)} exist."
        )
        _say(f"Logs and data: {env.workdir}")
        _say("Ready. In another terminal:")
        print(f"\n    export KUBECONFIG={env.kubeconfig} PATH={path}", flush=True)
        print(f"    kubectl apply -f {EXAMPLES / 'alice-reader.yaml'}\n", flush=True)
        _say("Running the operator (Ctrl-C stops it and everything above).")
        os.environ["KUBECONFIG"] = str(env.kubeconfig)
        return run_operator(settings, kubeconfig=str(env.kubeconfig))
    except KeyboardInterrupt:
        return 130
    finally:
        _say("Stopping Milvus, kube-apiserver and etcd ...")
        env.stop()
        sys.stdout.flush()
