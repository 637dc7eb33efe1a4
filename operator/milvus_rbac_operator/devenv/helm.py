"""helm, built from the pinned Go module in hack/helm and cached outside the checkout.

Keyed by the pin (go.mod + go.sum), as controlplane.py does for kube-apiserver, so that the
chart's tests lint, render and install with a real helm and every clone reuses the binary.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from milvus_rbac_operator.devenv.cache import cache_dir

BINARY = "helm"
_MODULE = "helm.sh/helm/v4"
# A build with an empty Go cache on a 2-core machine, measured; printed while it works.
_COLD_BUILD_MINUTES = 5
Say = Callable[[str], None]


def module_dir() -> Path:
    """hack/helm of this checkout (overridable for installs outside a checkout)."""
    explicit = os.environ.get("MRBO_HELM_MODULE")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[3] / "hack" / "helm"


def helm_version(go_mod: str) -> str:
    for line in go_mod.splitlines():
        parts = line.split()
        if _MODULE in parts and not line.lstrip().startswith("//"):
            index = parts.index(_MODULE) + 1
            if index < len(parts) and parts[index].startswith("v"):
                return parts[index]
    raise RuntimeError(f"hack/helm/go.mod does not require {_MODULE}")


def binary_path(module: Path) -> Path:
    go_mod = (module / "go.mod").read_text()
    pin = hashlib.sha256(go_mod.encode() + (module / "go.sum").read_bytes()).hexdigest()[:12]
    return cache_dir() / "helm" / f"{helm_version(go_mod)}-{pin}" / BINARY


def ensure_binary(say: Say = print) -> Path:
    """Build helm unless the cache already has it for this pin."""
    module = module_dir()
    target = binary_path(module)
    if target.exists():
        return target
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first build, then reuses it
        if not target.exists():
            _build(module, target, say)
    return target


def _build(module: Path, target: Path, say: Say) -> None:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is needed once to build hack/helm; install Go >= 1.26")
    version = helm_version((module / "go.mod").read_text())
    say(
        f"Building helm {version} from the Go module proxy (one time; about "
        f"{_COLD_BUILD_MINUTES} minutes on 2 cores; cached in {target.parent})"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{BINARY}.partial")
    log = target.parent / "build.log"
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            say(f"  still building helm ({(time.monotonic() - started) / 60:.1f} min; log: {log})")

    threading.Thread(target=heartbeat, daemon=True).start()
    # What helm's own Makefile stamps, so `helm version` names the pin, not "unreleased".
    stamp = "helm.sh/helm/v4/internal/version"
    ldflags = (
        f"-s -w -X {stamp}.version={version} -X {stamp}.metadata= -X {stamp}.gitTreeState=clean"
    )
    try:
        with log.open("w") as out:
            result = subprocess.run(
                [
                    go,
                    "build",
                    "-trimpath",
                    f"-ldflags={ldflags}",
                    "-o",
                    str(staging),
                    _MODULE + "/cmd/helm",
                ],
                cwd=module,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CGO_ENABLED": "0"},
                check=False,
            )
    finally:
        done.set()
    if result.returncode != 0:
        raise RuntimeError(f"building helm failed; see {log}:\n{log.read_text()[-3000:]}")
    staging.rename(target)  # atomic: a reader never sees half a binary
    say(f"Built helm in {(time.monotonic() - started) / 60:.1f} min.")


def run_helm(
    args: Sequence[str],
    *,
    kubeconfig: Path | None = None,
    home: Path,
    stdin: str | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    binary: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """helm with its config, cache and data under `home`, so nothing is read from or left in ~.

    Releases are stored as Secrets in the cluster; `home` only holds helm's own bookkeeping.
    """
    helm_env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        **(env or {}),
    }
    if kubeconfig is not None:
        helm_env["KUBECONFIG"] = str(kubeconfig)
    else:
        helm_env.pop("KUBECONFIG", None)
    result = subprocess.run(
        [str(binary or ensure_binary()), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=helm_env,
        check=False,
        timeout=180,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout.strip()[-3000:]}\n{result.stderr.strip()}"
        )
    return result
