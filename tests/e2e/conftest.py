"""The operator as a separate process, driven through the real API server as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
import yaml

from milvus_rbac_operator.devenv import (
    LocalEnvironment,
    install_admission_policy,
    install_crds,
    processes,
    run_kubectl,
)
from milvus_rbac_operator.devenv.milvus_server import ROOT_PASSWORD, ROOT_USERNAME, EmbeddedMilvus

pytestmark = pytest.mark.e2e
T = TypeVar("T")
GROUP, VERSION = "rbac.milvus.io", "v1alpha1"
# Fast pacing so that retries are seen within a test; production defaults are in settings.py.
OPERATOR_ENV = {
    "MRBO_RETRY_INITIAL_SECONDS": "0.5",
    "MRBO_RETRY_MAX_SECONDS": "2",
    "MRBO_NOT_FOUND_RETRY_SECONDS": "2",
    "MRBO_CONNECTION_CHECK_SECONDS": "2",
    "MRBO_DRIFT_INTERVAL_SECONDS": "3",
    # Tests reach Milvus on loopback only; 127.0.0.2 stands for a host tenants must not reach.
    "MRBO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "MRBO_OPERATOR_NAMESPACE": "milvus-rbac-operator",
    "MRBO_PROTECTED_USERS": "svc_guard",
}
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac"
SHIPPED_IDENTITY = "milvus-rbac-operator"


def eventually(probe: Callable[[], T], what: str, timeout: float = 60, interval: float = 0.25) -> T:
    """The first truthy value of `probe`; fails loudly with the last value when time runs out."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


@dataclass
class Cluster:
    kubeconfig: Path  # cluster-admin: what the tests themselves act as
    # deploy/admission is installed: new bindings get the finalizer and intent at admission.
    admission_policy: bool = False

    def __post_init__(self) -> None:
        api = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        return run_kubectl(self.kubeconfig, args, stdin, check)

    def apply(self, *objects: dict[str, Any], check: bool = True) -> Any:
        return self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects), check=check)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def get_cluster(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_cluster_custom_object(
                GROUP, VERSION, plural, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def binding(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("milvusrolebindings", namespace, name)

    def events(self, namespace: str, name: str) -> list[Any]:
        listed = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return sorted(listed.items, key=lambda e: e.last_timestamp or e.event_time or 0)


def follow_binding(
    cluster: Cluster,
    namespace: str,
    name: str,
    until: Callable[[dict[str, Any]], bool],
    since: str | None = None,
) -> Callable[[], list[dict[str, Any]]]:
    """Watch one binding from now (or resourceVersion `since`) until an event satisfies `until`.

    Returns a function that waits for that event and gives every event seen up to it.
    """
    seen: list[dict[str, Any]] = []
    done = threading.Event()
    watch = kubernetes.watch.Watch()
    plural = "milvusrolebindings"
    if since is None:
        listed = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        since = listed["metadata"]["resourceVersion"]

    def run() -> None:
        for event in watch.stream(
            cluster.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            field_selector=f"metadata.name={name}",
            resource_version=since,
            timeout_seconds=60,
        ):
            seen.append(event)
            if until(event):
                break
        done.set()

    threading.Thread(target=run, daemon=True).start()

    def events() -> list[dict[str, Any]]:
        assert done.wait(60), f"the watch of {name} ended before the awaited event: {seen}"
        watch.stop()
        return seen

    return events


def wait_reason(
    cluster: Cluster, plural: str, namespace: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    """The object once its Ready condition has `reason` (cluster-scoped when no namespace)."""

    def probe() -> dict[str, Any] | None:
        obj = (
            cluster.get(plural, namespace, name) if namespace else cluster.get_cluster(plural, name)
        )
        return obj if (ready(obj) or {}).get("reason") == reason else None

    found: dict[str, Any] = eventually(probe, f"{plural} {name} reason {reason}", timeout)
    return found


def operator_identity(
    cluster: Cluster, workdir: Path, name: str = SHIPPED_IDENTITY, namespaces: tuple[str, ...] = ()
) -> Path:
    """A kubeconfig holding a ServiceAccount token with exactly deploy/rbac's rules.

    `name` renames the ServiceAccount, its namespace and its roles (the shipped manifests use
    milvus-rbac-operator for all). With `namespaces`, the namespaced rules are bound in those
    namespaces only (namespaced.yaml), else everywhere (all-namespaces.yaml).
    """

    def manifest(file: str, namespace: str = "") -> str:
        text = (RBAC / file).read_text().replace(SHIPPED_IDENTITY, name)
        return text.replace("namespace: team-a", f"namespace: {namespace}") if namespace else text

    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    documents = [manifest("operator.yaml")]
    if namespaces:
        documents += [manifest("namespaced.yaml", ns) for ns in namespaces]
    else:
        documents.append(manifest("all-namespaces.yaml"))
    cluster.kubectl("apply", "-f", "-", stdin="\n---\n".join(documents))
    token = cluster.kubectl("create", "token", name, f"--namespace={name}", "--duration=12h")
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    entry = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [entry],
        "users": [{"name": name, "user": {"token": token.stdout.strip()}}],
        "contexts": [
            {
                "name": name,
                # Events about cluster-scoped objects go to the context's namespace.
                "context": {"cluster": entry["name"], "user": name, "namespace": name},
            }
        ],
        "current-context": name,
    }
    path = workdir / f"kubeconfig-{name}"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def ready(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Ready condition of an object, if any."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return dict(condition)
    return None


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, local_env: LocalEnvironment) -> Iterator[Cluster]:
    choice = request.config.getoption("--cluster")
    if choice == "local":
        kubeconfig = local_env.start_controlplane().kubeconfig
        yield Cluster(kubeconfig, admission_policy=local_env.admission_policy)
    elif choice == "existing":
        kubeconfig = os.environ.get("KUBECONFIG")
        if not kubeconfig:
            pytest.exit("--cluster=existing needs $KUBECONFIG", returncode=2)
        install_crds(Path(kubeconfig))
        yield Cluster(Path(kubeconfig), install_admission_policy(Path(kubeconfig)))
    else:
        try:
            from pytest_kind import KindCluster  # type: ignore[import-not-found]
        except ImportError:
            pytest.exit("--cluster=kind needs pytest-kind and Docker", returncode=2)
        kind = KindCluster("milvus-rbac-operator-e2e")
        kind.create()
        install_crds(Path(kind.kubeconfig_path))
        served = install_admission_policy(Path(kind.kubeconfig_path))
        yield Cluster(Path(kind.kubeconfig_path), served)
        kind.delete()


class OperatorProcess:
    """`milvus-rbac-operator run` as its own process, logs to a file the tests can read."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        env: dict[str, str],
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig, self.log_path, self.env = kubeconfig, log_path, env
        self.extra_args = extra_args
        self.proc: Any = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        argv = [
            sys.executable,
            "-X",
            "faulthandler",  # SIGABRT dumps every thread's stack into the log
            "-m",
            "milvus_rbac_operator",
            "run",
            f"--kubeconfig={self.kubeconfig}",
            *self.extra_args,
        ]
        # Logged in and acting, or (with leader election) standing by.
        started = re.compile(r"Initial authentication has finished|leader election: standing by")
        mark = len(started.findall(self.log_text()))
        self.proc = processes.spawn(argv, self.log_path, env={**os.environ, **self.env})
        eventually(
            lambda: len(started.findall(self.log_text())) > mark or self.proc.poll() is not None,
            "the operator to log in or stand by",
            30,
        )
        assert self.proc.poll() is None, self.log_text()[-3000:]

    def stop(self) -> None:
        processes.stop(self.proc, grace_seconds=20)

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to finish anything."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, local_env: LocalEnvironment) -> Path:
    """The operator's own identity: the shipped ServiceAccount and RBAC, nothing more."""
    return operator_identity(cluster, local_env.workdir)


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig: Path, milvus: EmbeddedMilvus, local_env: LocalEnvironment
) -> Iterator[OperatorProcess]:
    env = {**OPERATOR_ENV, "MRBO_HEALTH_LISTEN": f"127.0.0.1:{processes.free_port()}"}
    process = OperatorProcess(operator_kubeconfig, local_env.workdir / "operator.log", env)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    operator.start()  # again, if an earlier test stopped it
    return operator


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


def connection(
    namespace: str, name: str, uri: str, secret_name: str, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MilvusConnection",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"uri": uri, "credentialsSecretRef": {"name": secret_name}, **spec},
    }


def binding(
    namespace: str,
    name: str,
    username: str,
    role: str,
    connection_name: str = "milvus",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MilvusRoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "connectionRef": {"name": connection_name},
            "username": username,
            "roleName": role,
            **spec,
        },
    }


@pytest.fixture
def milvus_connection(cluster: Cluster, namespace: str, running_milvus: EmbeddedMilvus) -> str:
    """A Secret with root's credentials and a MilvusConnection `milvus` to the shared Milvus."""
    cluster.apply(
        secret(namespace, "milvus-root", username=ROOT_USERNAME, password=ROOT_PASSWORD),
        connection(namespace, "milvus", running_milvus.uri, "milvus-root"),
    )
    return "milvus"


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
