"""The container image, end to end: built by buildah from the Dockerfile, run by its entrypoint.

The image is built on the local Debian base (hack/image; cached, and buildah reuses unchanged
layers) and run with `buildah run --isolation chroot`, which shares the host's network, so the
operator inside reaches the local kube-apiserver and Milvus on 127.0.0.1 as it would reach a
cluster's Service. The session's own operator is stopped meanwhile: only the one in the image
can make a binding Ready.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv import LocalEnvironment, image, processes
from tests.conftest import roles_of
from tests.e2e.conftest import (
    OPERATOR_ENV,
    Cluster,
    OperatorProcess,
    binding,
    dump,
    eventually,
    ready,
)

# A cold build (debootstrap of the base, then every wheel from PyPI) takes about 3 minutes.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
# Not under /run: buildah puts a fresh tmpfs there, over any mount.
KUBECONFIG_IN_IMAGE = "/etc/mrbo/kubeconfig"
STARTED = "Initial authentication has finished"
# What the entrypoint resolves to inside the image: the console script of the venv.
ENTRYPOINT_SCRIPT = "/opt/venv/bin/milvus-rbac-operator"


@pytest.fixture(scope="module")
def operator_image(local_env: LocalEnvironment) -> str:
    log = local_env.workdir / "image-build.log"
    build = image.build_image(say=lambda line: print(f"[image] {line}"), log_path=log)
    print(f"[image] {build.image} ready in {build.seconds:.0f} s ({image.image_size(build.image)})")
    return build.image


def self_contained(kubeconfig: Path, target: Path, uid: int) -> Path:
    """The kubeconfig with its files inlined, readable by `uid` alone: one file to mount."""
    config = yaml.safe_load(kubeconfig.read_text())
    inline = {
        "certificate-authority": "certificate-authority-data",
        "client-certificate": "client-certificate-data",
        "client-key": "client-key-data",
    }
    for section, entry in (("clusters", "cluster"), ("users", "user")):
        for item in config.get(section) or []:
            fields = item[entry]
            for key, data_key in inline.items():
                if key in fields:
                    raw = Path(fields.pop(key)).read_bytes()
                    fields[data_key] = base64.b64encode(raw).decode()
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    os.chown(target, uid, uid)
    return target


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (buildah, its chroot runtime and the operator)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def scripts_running(pgid: int, script: str) -> dict[int, int]:
    """pid -> uid of the group's Pythons running `script` (their argv: python, script, ...).

    buildah-chroot-exec, whose argv names the script too, only starts it and is left out.
    """
    found = {}
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            interpreter = argv[0].rsplit(b"/", 1)[-1]
            if interpreter.startswith(b"python") and argv[1:2] == [script.encode()]:
                found[pid] = Path(f"/proc/{pid}").stat().st_uid
    return found


@contextlib.contextmanager
def running_in_image(
    ref: str, argv: list[str], user: str, env: dict[str, str], volumes: list[str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The command inside a fresh working container; killed, and the container gone, on exit."""
    container = image.Container(ref)
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = processes.spawn(container.command(argv, user, env, volumes), log)
        yield proc
    finally:
        if proc is not None:
            processes.stop(proc, grace_seconds=20)
            # Whatever buildah left of the group (it is the group's leader) goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            eventually(lambda: not group_members(proc.pid), "the container's processes to exit", 20)
        container.remove()


def test_image_runs_a_numeric_non_root_user_with_an_exec_form_entrypoint(
    operator_image: str,
) -> None:
    config = image.image_config(operator_image)
    assert config.entrypoint == ("milvus-rbac-operator",)
    assert config.cmd == ("run",)
    uid, _, gid = config.user.partition(":")
    assert uid.isdigit(), config.user
    assert int(uid) != 0, config.user
    assert gid == "" or gid.isdigit(), config.user
    assert config.labels["org.opencontainers.image.title"] == "milvus-rbac-operator"
    assert config.labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_image_holds_the_runtime_dependencies_only(operator_image: str) -> None:
    probe = (
        "import importlib.util as u, sys\n"
        "for name in sys.argv[1:]:\n"
        "    print(name, u.find_spec(name) is not None)\n"
    )
    wanted = ["milvus_rbac_operator", "kopf", "kubernetes", "pymilvus", "aiohttp"]
    # The devenv extra (Milvus server, cryptography), the dev group and the installers.
    unwanted = ["milvus", "cryptography", "pytest", "mypy", "ruff", "pip", "setuptools", "uv"]
    config = image.image_config(operator_image)
    container = image.Container(operator_image)
    try:
        argv = ["python3", "-c", probe, *wanted, *unwanted]
        result = subprocess.run(
            container.command(argv, config.user), capture_output=True, text=True, check=False
        )
    finally:
        container.remove()
    assert result.returncode == 0, result.stderr
    found = dict(line.split() for line in result.stdout.splitlines())
    assert found == {**dict.fromkeys(wanted, "True"), **dict.fromkeys(unwanted, "False")}


def test_operator_in_the_image_makes_a_binding_ready_and_grants_the_role(
    operator_image: str,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    cluster: Cluster,
    namespace: str,
    milvus_connection: str,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
    tmp_path: Path,
) -> None:
    config = image.image_config(operator_image)
    uid = int(config.user.partition(":")[0])
    kubeconfig = self_contained(operator_kubeconfig, tmp_path / "kubeconfig", uid)
    user, role = make_user(), make_role()
    log = tmp_path / "operator-in-image.log"
    # The image's own entrypoint; "run" as its CMD says, for this namespace only.
    argv = [*config.entrypoint, *config.cmd, "-n", namespace]
    env = {**OPERATOR_ENV, "KUBECONFIG": KUBECONFIG_IN_IMAGE}
    volumes = [f"{kubeconfig}:{KUBECONFIG_IN_IMAGE}:ro"]

    operator.stop()  # it watches every namespace; from here on only the image's operator acts
    try:
        with running_in_image(operator_image, argv, config.user, env, volumes, log) as proc:

            def started() -> bool:
                return proc.poll() is not None or STARTED in log.read_text(errors="replace")

            eventually(started, "the operator in the image to log in", 60)
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            # The operator's process inside the container runs as the image's user.
            inside = scripts_running(proc.pid, ENTRYPOINT_SCRIPT)
            assert len(inside) == 1, inside
            assert set(inside.values()) == {uid}, inside

            cluster.apply(binding(namespace, "in-image", user, role, milvus_connection))

            def granted() -> dict[str, Any] | None:
                obj = cluster.binding(namespace, "in-image")
                condition = ready(obj)
                ok = condition and (condition["status"], condition["reason"]) == ("True", "Granted")
                return obj if ok else None

            try:
                obj = eventually(granted, "Ready=True Granted through the image's operator", 90)
            except AssertionError:
                print(log.read_text(errors="replace")[-5000:])
                raise
            assert obj["status"]["applied"]["roleName"] == role, dump(obj)
            assert role in roles_of(milvus_admin, user)
            assert "in-image" in log.read_text(errors="replace")

            # SIGTERM reaches the operator itself (exec-form entrypoint, no shell in between),
            # and it stops cleanly.
            for pid in inside:
                os.kill(pid, signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        operator.start()
