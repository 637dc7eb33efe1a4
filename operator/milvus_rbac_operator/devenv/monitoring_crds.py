"""The Prometheus Operator's ServiceMonitor CRD, generated from its Go types by controller-gen.

The chart renders a ServiceMonitor; for the API server to validate it for real (unknown fields,
types, patterns), the test cluster needs that CRD. It is generated, as the Prometheus Operator
generates its own, from the pinned Go module in hack/monitoring-crds and cached outside the
checkout keyed by the pin.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from milvus_rbac_operator.devenv.cache import cache_dir

_MODULE = "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring"
SERVICEMONITOR_CRD = "monitoring.coreos.com_servicemonitors.yaml"
Say = Callable[[str], None]


def module_dir() -> Path:
    """hack/monitoring-crds of this checkout (overridable for installs outside a checkout)."""
    explicit = os.environ.get("MRBO_MONITORING_CRDS_MODULE")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[3] / "hack" / "monitoring-crds"


def monitoring_version(go_mod: str) -> str:
    for line in go_mod.splitlines():
        parts = line.split()
        if _MODULE in parts and not line.lstrip().startswith("//"):
            return parts[parts.index(_MODULE) + 1]
    raise RuntimeError(f"hack/monitoring-crds/go.mod does not require {_MODULE}")


def crds_dir(module: Path) -> Path:
    go_mod = (module / "go.mod").read_text()
    pin = hashlib.sha256(
        go_mod.encode() + (module / "go.sum").read_bytes() + (module / "types.go").read_bytes()
    ).hexdigest()[:12]
    return cache_dir() / "monitoring-crds" / f"{monitoring_version(go_mod)}-{pin}"


def ensure_servicemonitor_crd(say: Say = print) -> Path:
    """The ServiceMonitor CRD file, generated unless the cache already has it for this pin."""
    module = module_dir()
    target = crds_dir(module)
    if not (target / SERVICEMONITOR_CRD).exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with (target.parent / ".build.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first, then reuses it
            if not (target / SERVICEMONITOR_CRD).exists():
                _generate(module, target, say)
    return target / SERVICEMONITOR_CRD


def _generate(module: Path, target: Path, say: Say) -> None:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is needed once to build hack/monitoring-crds; install Go >= 1.26")
    version = monitoring_version((module / "go.mod").read_text())
    say(f"Generating the ServiceMonitor CRD ({_MODULE} {version}) with controller-gen (one time)")
    started = time.monotonic()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    generator = staging / "controller-gen"
    controller_gen = "sigs.k8s.io/controller-tools/cmd/controller-gen"
    steps = [
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(generator), controller_gen],
        [str(generator), "crd", f"paths={_MODULE}/v1", f"output:crd:dir={staging}"],
    ]
    for argv in steps:
        result = subprocess.run(argv, cwd=module, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed:\n{result.stdout}{result.stderr}")
    generator.unlink()
    if not (staging / SERVICEMONITOR_CRD).exists():
        raise RuntimeError(f"controller-gen wrote no {SERVICEMONITOR_CRD} in {staging}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # atomic: a reader never sees half the files
    say(f"Generated in {time.monotonic() - started:.0f} s.")
