"""The local environment shared by `make dev`, the tests and the benchmarks.

A real kube-apiserver + etcd (RBAC on, 127.0.0.1 only) and an embedded Milvus with authorization
on, started and stopped by one object so that every user of it does the same thing.
"""

from __future__ import annotations

import subprocess
import tempfile
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
            self.controlplane = ControlPlane(self.workdir / "controlplane", self._say)
            self._say("Starting etcd and kube-apiserver on 127.0.0.1 ...")
            self.controlplane.start()
            self._say("Starting the embedded Milvus (authorization on) ...")
            self.milvus = EmbeddedMilvus(self.workdir / "milvus")
            self.milvus.start()
            self.install_crds()
        except BaseException:
            self.stop()
            raise
        return self

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.kubeconfig, args, stdin, check)

    def install_crds(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(CRDS))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))

    def stop(self) -> None:
        if self.milvus is not None:
            self.milvus.close()
            self.milvus = None
        if self.controlplane is not None:
            self.controlplane.stop()
            self.controlplane = None


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
