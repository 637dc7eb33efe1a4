"""kstatus as Flux and kpt compute it: a tiny binary around sigs.k8s.io/cli-utils' status.Compute.

Built once from the pinned Go module in hack/kstatus and cached outside the checkout, keyed by
the pin (as controlplane.py does for kube-apiserver), so the tests ask the real library.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milvus_rbac_operator.devenv.cache import cache_dir

BINARY = "kstatus-compute"
_MODULE = "sigs.k8s.io/cli-utils"
Say = Callable[[str], None]


def module_dir() -> Path:
    """hack/kstatus of this checkout (overridable for installs outside a checkout)."""
    explicit = os.environ.get("MRBO_KSTATUS_MODULE")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[3] / "hack" / "kstatus"


def cli_utils_version(go_mod: str) -> str:
    for line in go_mod.splitlines():
        parts = line.split()
        if _MODULE in parts and not line.lstrip().startswith("//"):
            return parts[parts.index(_MODULE) + 1]
    raise RuntimeError(f"hack/kstatus/go.mod does not require {_MODULE}")


def binary_path(module: Path) -> Path:
    go_mod = (module / "go.mod").read_text()
    pin = hashlib.sha256(
        go_mod.encode() + (module / "go.sum").read_bytes() + (module / "main.go").read_bytes()
    ).hexdigest()[:12]
    return cache_dir() / "kstatus" / f"{cli_utils_version(go_mod)}-{pin}" / BINARY


def ensure_binary(say: Say = print) -> Path:
    """Build kstatus-compute unless the cache already has it for this pin."""
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
        raise RuntimeError("Go is needed once to build hack/kstatus; install Go >= 1.26")
    version = cli_utils_version((module / "go.mod").read_text())
    say(f"Building {BINARY} ({_MODULE} {version}) from the Go module proxy (one time; {target})")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{BINARY}.partial")
    started = time.monotonic()
    result = subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(staging), "."],
        cwd=module,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building {BINARY} failed:\n{result.stdout}{result.stderr}")
    staging.rename(target)  # atomic: a reader never sees half a binary
    say(f"Built in {time.monotonic() - started:.0f} s.")


@dataclass(frozen=True)
class KStatus:
    """What kstatus says: InProgress, Current, Failed, Terminating (or Unknown) and why."""

    status: str
    message: str


def compute(obj: Mapping[str, Any], binary: Path | None = None) -> KStatus:
    """kstatus's status.Compute of one object, as Flux's health checks see it."""
    result = subprocess.run(
        [str(binary or ensure_binary())],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{BINARY} failed: {result.stderr.strip()}")
    answer = json.loads(result.stdout)
    return KStatus(str(answer["status"]), str(answer["message"]))
