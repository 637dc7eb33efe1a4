"""Shared, real parts: one embedded Milvus (and, for e2e, one control plane) per test session."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv import LocalEnvironment, certs
from milvus_rbac_operator.devenv.milvus_server import (
    ROOT_PASSWORD,
    ROOT_USERNAME,
    EmbeddedMilvus,
    TLSFiles,
)

_ENV_KEY = pytest.StashKey[LocalEnvironment]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=("local", "kind", "existing"),
        default="local",
        help="e2e cluster: local kube-apiserver+etcd (default), kind via pytest-kind, "
        "or the existing cluster in $KUBECONFIG",
    )


@pytest.fixture(scope="session")
def local_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalEnvironment]:
    workdir = tmp_path_factory.mktemp("devenv", numbered=True)
    env = LocalEnvironment(workdir, say=lambda line: print(f"[devenv] {line}"))
    request.config.stash[_ENV_KEY] = env
    yield env
    env.stop()


@pytest.fixture(scope="session")
def milvus(local_env: LocalEnvironment) -> EmbeddedMilvus:
    return local_env.start_milvus()


@dataclass(frozen=True)
class TLSMilvus:
    """A second embedded Milvus with one-way TLS on, and a CA that did not sign its certificate."""

    server: EmbeddedMilvus
    ca_path: Path
    ca_pem: bytes
    other_ca_pem: bytes

    def admin(self) -> MilvusClient:
        return MilvusClient(
            uri=self.server.uri,
            token=f"{ROOT_USERNAME}:{ROOT_PASSWORD}",
            server_pem_path=str(self.ca_path),
            server_name="localhost",
        )


@pytest.fixture(scope="session")
def tls_milvus(local_env: LocalEnvironment) -> Iterator[TLSMilvus]:
    workdir = local_env.workdir / "milvus-tls"
    pki = workdir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca = certs.make_ca(pki, "milvus")
    other = certs.make_ca(pki, "stranger")
    leaf = certs.issue(ca, pki, "milvus-server", "localhost", server_names=("localhost",))
    server = EmbeddedMilvus(workdir, TLSFiles(leaf.cert, leaf.key, ca.cert))
    server.start()
    yield TLSMilvus(server, ca.cert, ca.cert.read_bytes(), other.cert.read_bytes())
    server.close()


@pytest.fixture
def running_milvus(milvus: EmbeddedMilvus) -> EmbeddedMilvus:
    """The shared Milvus, started again if an earlier test stopped it."""
    milvus.start()
    return milvus


@pytest.fixture(scope="session")
def milvus_admin(milvus: EmbeddedMilvus) -> Iterator[MilvusClient]:
    client = MilvusClient(uri=milvus.uri, token=f"{ROOT_USERNAME}:{ROOT_PASSWORD}")
    yield client
    client.close()


_counter = itertools.count()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names no other test uses: tests share one Milvus and one cluster."""
    run = uuid.uuid4().hex[:6]

    def make(prefix: str) -> str:
        return f"{prefix}_{run}_{next(_counter)}"

    return make


def roles_of(admin: MilvusClient, username: str) -> set[str]:
    # pymilvus reports a user without roles as an empty or missing `roles`; keep role names only.
    return {role for role in admin.describe_user(username).get("roles", ()) if role}


@pytest.fixture
def make_user(milvus_admin: MilvusClient, unique: Callable[[str], str]) -> Callable[[], str]:
    """Creates a fresh Milvus user and returns its name."""

    def make() -> str:
        name = unique("user")
        milvus_admin.create_user(name, f"{name}-pw")
        return name

    return make


@pytest.fixture
def make_role(milvus_admin: MilvusClient, unique: Callable[[str], str]) -> Callable[[], str]:
    """Creates a fresh Milvus role and returns its name."""

    def make() -> str:
        name = unique("role")
        milvus_admin.create_role(name)
        return name

    return make


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers: calls can only time out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    env = item.config.stash.get(_ENV_KEY, None)
    if report.failed and env is not None:
        logs = sorted(str(p) for p in Path(env.workdir).rglob("*.log"))
        report.sections.append(("local environment logs", "\n".join(logs)))
    return report


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("MRBO_CACHE_DIR", str(Path.home() / ".cache" / "milvus-rbac-operator"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


_skipped: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test proves nothing: the run fails rather than count it as passing."""
    if _skipped and exitstatus == 0:
        print(f"\n{len(_skipped)} test(s) skipped; a skip is a failure here:", *_skipped, sep="\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
