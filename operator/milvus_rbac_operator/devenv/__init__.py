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
ADMISSION = REPO_ROOT / "deploy" / "admission"


class LocalEnvironment:
    def __init__(self, workdir: Path | None = None, say: Callable[[str], None] = print) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mrbo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._say = say
        self.controlplane: ControlPlane | None = None
        self.milvus: EmbeddedMilvus | None = None
        # Whether deploy/admission is in place (the API server serves MutatingAdmissionPolicy).
        self.admission_policy = False

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
            self.install_manifests()
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

    def restart_apiserver(self) -> float:
        """Restart kube-apiserver; seconds from its return until it admits bindings again.

        With the admission policy, creates are answered 503 for a few seconds after a start,
        until the policy has the CRD's schema (see install_admission_policy).
        """
        assert self.controlplane is not None
        self.controlplane.restart_apiserver()
        started = time.monotonic()
        if self.admission_policy:
            _wait_until_admitted(self.kubeconfig)
        return time.monotonic() - started

    def install_manifests(self) -> None:
        """deploy/crds, then deploy/admission where the API server serves it."""
        install_crds(self.kubeconfig)
        self.admission_policy = install_admission_policy(self.kubeconfig)

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


# A binding the API server is asked to create with dryRun: what admission makes of it.
_PROBE = """
apiVersion: rbac.milvus.io/v1alpha1
kind: MilvusRoleBinding
metadata: {name: admission-probe, namespace: default}
spec: {connectionRef: {name: probe}, username: probe, roleName: probe}
"""


def install_admission_policy(kubeconfig: Path, manifests: Path = ADMISSION) -> bool:
    """Apply deploy/admission and wait until new bindings get the intent; False if not served.

    The API server takes a moment to start using a new policy: until then a binding would be
    created without it (and the operator would write the intent itself). Right after the CRDs
    are created, creates may also fail for a moment (503, "There can be a delay between when
    CustomResourceDefinitions are created and when they are available"): the policy needs the
    CRD's schema, which reaches it a little after the CRD is served.
    """
    served = run_kubectl(kubeconfig, ["api-resources", "--api-group=admissionregistration.k8s.io"])
    if "MutatingAdmissionPolicy" not in served.stdout:
        return False
    run_kubectl(kubeconfig, ["apply", "--server-side", "--force-conflicts", "-f", str(manifests)])
    _wait_until_admitted(kubeconfig)
    return True


def remove_admission_policy(kubeconfig: Path, manifests: Path = ADMISSION) -> None:
    """Delete deploy/admission and wait until new bindings no longer get the intent."""
    run_kubectl(kubeconfig, ["delete", "--ignore-not-found", "-f", str(manifests)])
    _wait_until(kubeconfig, admitted=False)


def _wait_until_admitted(kubeconfig: Path) -> None:
    _wait_until(kubeconfig, admitted=True)


def _wait_until(kubeconfig: Path, admitted: bool, timeout: float = 60) -> None:
    """Until a binding created now (a server dry-run) comes back with the admission's intent,
    or (admitted=False) is created without it."""
    probe = ["create", "--dry-run=server", "-o", "json", "-f", "-"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        created = run_kubectl(kubeconfig, probe, stdin=_PROBE, check=False)
        if created.returncode == 0 and ('"rbac.milvus.io/intent"' in created.stdout) is admitted:
            return
        time.sleep(0.2)
    change = "apply" if admitted else "stop applying"
    raise RuntimeError(f"deploy/admission's policy did not {change} within {timeout:g} s")


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
