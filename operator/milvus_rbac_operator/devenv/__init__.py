"""The local environment shared by `make dev`, the tests and the benchmarks.

A real kube-apiserver + etcd (RBAC on, 127.0.0.1 only) and an embedded Milvus with authorization
on, started and stopped by one object so that every user of it does the same thing.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from milvus_rbac_operator.devenv.controlplane import ControlPlane, kubectl
from milvus_rbac_operator.devenv.milvus_server import EmbeddedMilvus

REPO_ROOT = Path(__file__).resolve().parents[3]
CRDS = REPO_ROOT / "deploy" / "crds"


class LocalEnvironment:
    def __init__(self, workdir: Path | None = None, say: Callable[[str], None] = print) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mrbo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._say = say
        self.controlplane: ControlPlane | None = None
        self.milvus: EmbeddedMilvus | None = None

    @property
    def kubeconfig(self) -> Path:
        assert self.controlplane is not None
        return self.controlplane.kubeconfig

    def start(self) -> LocalEnvironment:
        try:
            self.start_controlplane()
            self.start_milvus()
        except BaseException:
            self.stop()
            raise
        return self

    def start_controlplane(self) -> ControlPlane:
        """etcd + kube-apiserver with the CRDs installed (once; later calls reuse it)."""
        if self.controlplane is None:
            controlplane = ControlPlane(self.workdir / "controlplane", self._say)
            self._say("Starting etcd and kube-apiserver on 127.0.0.1 ...")
            controlplane.start()
            self.controlplane = controlplane
            self.install_crds()
        return self.controlplane

    def start_milvus(self) -> EmbeddedMilvus:
        """The embedded Milvus, authorization on (once; later calls reuse it)."""
        if self.milvus is None:
            self._say("Starting the embedded Milvus (authorization on) ...")
            self.milvus = EmbeddedMilvus(self.workdir / "milvus")
        self.milvus.start()
        return self.milvus

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.kubeconfig, args, stdin, check)

    def install_crds(self) -> None:
        install_crds(self.kubeconfig)

    def stop(self) -> None:
        if self.milvus is not None:
            self.milvus.close()
            self.milvus = None
        if self.controlplane is not None:
            self.controlplane.stop()
            self.controlplane = None


def install_crds(kubeconfig: Path, crds: Path = CRDS) -> None:
    """Apply CRDs (by default deploy/crds, their single source) and wait until they are served.

    `kubectl wait` fails at once, instead of waiting, on a CRD whose status has no conditions
    yet (an accessor error, seen right after the apply on a loaded machine): that is retried.
    """
    run_kubectl(kubeconfig, ["apply", "--server-side", "--force-conflicts", "-f", str(crds)])
    wait = ["wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds)]
    deadline = time.monotonic() + 60
    while True:
        result = run_kubectl(kubeconfig, wait, check=False)
        if result.returncode == 0:
            return
        if "accessor error" not in result.stderr or time.monotonic() > deadline:
            raise RuntimeError(f"kubectl {' '.join(wait)} failed: {result.stderr.strip()}")
        time.sleep(0.2)


def run_kubectl(
    kubeconfig: Path, args: Sequence[str], stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [kubectl(), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result
