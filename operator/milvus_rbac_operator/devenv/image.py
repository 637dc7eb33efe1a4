"""The container image, built with buildah where no container registry can be reached.

The Dockerfile's default base comes from Docker Hub. Here it is replaced by a local one:
a minimal Debian root filesystem made by debootstrap from Debian's mirror (the recipe is
hack/image/base.toml), cached outside the checkout keyed by a hash of that recipe, and imported
into buildah's storage as localhost/mrbo-base:<suite>-<key>. The project image is then built by
`buildah bud --isolation chroot --layers` on that base, so unchanged layers are reused.

`python -m milvus_rbac_operator.devenv.image` builds it (what `make image` runs).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milvus_rbac_operator.devenv.cache import cache_dir

Say = Callable[[str], None]
REPO_ROOT = Path(__file__).resolve().parents[3]
IMAGE = "localhost/milvus-rbac-operator:dev"
BASE_REPOSITORY = "localhost/mrbo-base"
# Part of the base's key: bump it when _trim or _import change what the base holds.
_RECIPE_REVISION = "1"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where the builder stage finds pip's settings and the CA bundle of this machine (see
# _pip_mounts). They are mounted only while RUN steps execute; no layer keeps them.
_PIP_CONF = "/etc/pip.conf"
_PIP_CA = "/etc/ssl/certs/mrbo-build-ca.pem"
# Measured on 2 cores; printed so that nobody stares at a silent terminal.
_COLD_BASE_MINUTES = 2


@dataclass(frozen=True)
class BaseRecipe:
    """What goes into the local base: a Debian suite, a debootstrap variant and packages."""

    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]

    @classmethod
    def load(cls, path: Path | None = None) -> BaseRecipe:
        data = tomllib.loads((path or recipe_path()).read_text())
        return cls(
            suite=str(data["suite"]),
            mirror=str(data["mirror"]),
            variant=str(data.get("variant", "minbase")),
            packages=tuple(str(p) for p in data["packages"]),
        )

    @property
    def key(self) -> str:
        material = json.dumps(
            [_RECIPE_REVISION, self.suite, self.mirror, self.variant, sorted(self.packages)]
        )
        return hashlib.sha256(material.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"{BASE_REPOSITORY}:{self.suite}-{self.key}"

    @property
    def cache(self) -> Path:
        return cache_dir() / "image" / f"{self.suite}-{self.key}"


def recipe_path() -> Path:
    """hack/image/base.toml of this checkout (overridable for installs outside a checkout)."""
    explicit = os.environ.get("MRBO_IMAGE_RECIPE")
    return Path(explicit) if explicit else REPO_ROOT / "hack" / "image" / "base.toml"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError(f"{name} is needed to build the image here (apt-get install {name})")
    return found


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder at a time per cache entry; a second one waits, then reuses the result."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _heartbeat(say: Say, what: str, log: Path) -> Iterator[None]:
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(30):
            say(f"  still {what} ({(time.monotonic() - started) / 60:.1f} min so far; log: {log})")

    threading.Thread(target=beat, daemon=True).start()
    try:
        yield
    finally:
        done.set()


def ensure_rootfs(recipe: BaseRecipe, say: Say = print) -> Path:
    """The base's root filesystem as a tar archive in the cache; debootstrapped once per key."""
    archive = recipe.cache / "rootfs.tar"
    if archive.exists():
        return archive
    with _locked(recipe.cache):
        if not archive.exists():
            _debootstrap(recipe, archive, say)
    return archive


def _debootstrap(recipe: BaseRecipe, archive: Path, say: Say) -> None:
    debootstrap = _tool("debootstrap")
    staging = recipe.cache / "rootfs.partial"
    log = recipe.cache / "debootstrap.log"
    _remove_tree(staging)
    say(
        f"Building the local base {recipe.tag}: debootstrap {recipe.suite} with "
        f"{', '.join(recipe.packages)} from {recipe.mirror} (one time; about "
        f"{_COLD_BASE_MINUTES} minutes; cached in {recipe.cache})"
    )
    started = time.monotonic()
    argv = [
        debootstrap,
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(staging),
        recipe.mirror,
    ]
    try:
        with _heartbeat(say, "debootstrapping", log), log.open("w") as out:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed (exit {result.returncode}); see {log}")
        _trim(staging)
        partial = archive.with_name(archive.name + ".partial")
        subprocess.run(
            [_tool("tar"), "--numeric-owner", "-C", str(staging), "-cf", str(partial), "."],
            check=True,
        )
        partial.rename(archive)
    finally:
        _remove_tree(staging)
    say(f"Base root filesystem ready in {(time.monotonic() - started) / 60:.1f} min.")


def _trim(root: Path) -> None:
    """Drop what an image never needs: package caches and lists, docs, the host's identity."""
    for pattern in (
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/lib/apt/lists/*",
        "var/cache/debconf/*-old",
        "var/log/*",
        "usr/share/doc/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/locale/*",
        "dev/*",  # the runtime provides /dev
        "tmp/*",
        # debootstrap copies these from the host; the runtime provides its own.
        "etc/hostname",
        "etc/resolv.conf",
    ):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _remove_tree(path: Path) -> None:
    """rmtree, after unmounting what a failed debootstrap may have left mounted inside."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        inside = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for mountpoint in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False)
    shutil.rmtree(path)


def _buildah(*args: str, capture: bool = True) -> str:
    result = subprocess.run(
        [_tool("buildah"), *args], capture_output=capture, text=True, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or "").strip() if capture else ""
        raise RuntimeError(f"buildah {' '.join(args[:2])} failed: {detail}")
    return result.stdout or ""


def image_exists(ref: str) -> bool:
    result = subprocess.run(
        [_tool("buildah"), "inspect", "--type", "image", ref],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def ensure_base_image(recipe: BaseRecipe | None = None, say: Say = print) -> str:
    """localhost/mrbo-base:<suite>-<key> in buildah's storage, imported from the cached rootfs."""
    recipe = recipe or BaseRecipe.load()
    if image_exists(recipe.tag):
        return recipe.tag
    archive = ensure_rootfs(recipe, say)
    with _locked(recipe.cache):
        if not image_exists(recipe.tag):
            _import(recipe, archive, say)
    return recipe.tag


def _import(recipe: BaseRecipe, archive: Path, say: Say) -> None:
    say(f"Importing {archive} as {recipe.tag} ...")
    container = _buildah("from", "scratch").strip()
    try:
        _buildah("add", "--quiet", container, str(archive), "/")  # unpacks the archive
        _buildah(
            "config",
            "--env",
            f"PATH={_PATH}",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "python3",
            "--label",
            f"org.opencontainers.image.title=mrbo-base {recipe.suite}",
            "--label",
            "org.opencontainers.image.description=debootstrap --variant="
            f"{recipe.variant} {recipe.suite} + {' '.join(recipe.packages)}",
            container,
        )
        _buildah("commit", "--quiet", container, recipe.tag)
    finally:
        subprocess.run([_tool("buildah"), "rm", container], capture_output=True, check=False)


def _host_pip_settings() -> dict[str, str]:
    """pip's own settings on this machine (config files, then PIP_* variables, as pip does)."""
    parser = configparser.ConfigParser()
    home = Path.home()
    files = [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        home / ".pip" / "pip.conf",
        home / ".config" / "pip" / "pip.conf",
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    parser.read([str(f) for f in files if f.is_file()])
    settings = dict(parser["global"]) if parser.has_section("global") else {}
    for key in ("cert", "index-url", "extra-index-url", "trusted-host"):
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            settings[key] = value
    return settings


def _pip_mounts(scratch: Path) -> list[str]:
    """`--volume` options that let pip in the builder stage reach the index as pip does here.

    Only the index and trust settings are carried over, e.g. the CA bundle of a TLS-inspecting
    egress proxy; nothing host-specific (find-links, caches) goes in.
    """
    host = _host_pip_settings()
    cert = host.get("cert") or os.environ.get("SSL_CERT_FILE") or ""
    lines = ["[global]"]
    mounts: list[str] = []
    if cert and Path(cert).is_file():
        mounts += ["--volume", f"{Path(cert).resolve()}:{_PIP_CA}:ro"]
        lines.append(f"cert = {_PIP_CA}")
    for key in ("index-url", "extra-index-url", "trusted-host"):
        if host.get(key):
            lines.append(f"{key} = {host[key]}")
    conf = scratch / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o644)
    return [*mounts, "--volume", f"{conf}:{_PIP_CONF}:ro"]


def _version(context: Path) -> str:
    return str(tomllib.loads((context / "pyproject.toml").read_text())["project"]["version"])


def _revision(context: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(context), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


@dataclass(frozen=True)
class Build:
    image: str
    base: str
    seconds: float


def build_image(
    tag: str = IMAGE,
    context: Path = REPO_ROOT,
    base: str | None = None,
    say: Say = print,
    log_path: Path | None = None,
) -> Build:
    """`buildah bud` of the Dockerfile on the local base; unchanged layers are reused.

    The build's output goes to `log_path` when given (tests), else to this terminal.
    """
    started = time.monotonic()
    base = base or ensure_base_image(say=say)
    with tempfile.TemporaryDirectory(prefix="mrbo-image-") as scratch:
        argv = [
            _tool("buildah"),
            "bud",
            "--isolation",
            "chroot",
            "--layers",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            f"VERSION={_version(context)}",
            "--build-arg",
            f"REVISION={_revision(context)}",
            *_pip_mounts(Path(scratch)),
            "--tag",
            tag,
            "--file",
            str(context / "Dockerfile"),
            str(context),
        ]
        say(f"Building {tag} on {base} ...")
        if log_path is None:
            result = subprocess.run(argv, check=False)
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with _heartbeat(say, "building", log_path), log_path.open("a") as out:
                result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        where = f"; see {log_path}" if log_path else ""
        raise RuntimeError(f"buildah bud failed (exit {result.returncode}){where}")
    return Build(tag, base, time.monotonic() - started)


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str
    labels: dict[str, str]


def image_config(ref: str) -> ImageConfig:
    """The OCI config of an image in buildah's storage."""
    inspected: dict[str, Any] = json.loads(_buildah("inspect", "--type", "image", ref))
    config: dict[str, Any] = inspected["OCIv1"].get("config") or {}
    return ImageConfig(
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
        user=str(config.get("User") or ""),
        labels=dict(config.get("Labels") or {}),
    )


def image_size(ref: str) -> str:
    """The size `buildah images` shows, e.g. `243 MB`."""
    return _buildah("images", "--format", "{{.Size}}", ref).strip()


class Container:
    """A buildah working container of an image, for running commands inside it."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.id = _buildah("from", image).strip()

    def command(
        self,
        argv: Sequence[str],
        user: str,
        env: dict[str, str] | None = None,
        volumes: Sequence[str] = (),
    ) -> list[str]:
        """`argv` wrapped to run in this container (chroot isolation: the host's network)."""
        options = [f"--env={k}={v}" for k, v in (env or {}).items()]
        options += [f"--volume={v}" for v in volumes]
        return [
            _tool("buildah"),
            "run",
            "--isolation",
            "chroot",
            f"--user={user}",
            *options,
            self.id,
            "--",
            *argv,
        ]

    def remove(self) -> None:
        subprocess.run([_tool("buildah"), "rm", self.id], capture_output=True, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m milvus_rbac_operator.devenv.image", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tag", default=IMAGE, help=f"image to build (default {IMAGE})")
    parser.add_argument("--base", help="base image (default: the local Debian base)")
    args = parser.parse_args(argv)
    build = build_image(tag=args.tag, base=args.base)
    print(
        f"Built {build.image} on {build.base} in {build.seconds:.0f} s; "
        f"size {image_size(build.image)}.",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
