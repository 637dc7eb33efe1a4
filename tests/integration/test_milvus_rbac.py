"""The Milvus module against the real embedded Milvus 2.3.5 (authorization on)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv.milvus_server import ROOT_PASSWORD, ROOT_USERNAME, EmbeddedMilvus
from milvus_rbac_operator.milvus import Credentials, Endpoint, MilvusRBAC
from milvus_rbac_operator.model import Operation, Outcome
from tests.conftest import TLSMilvus, roles_of

pytestmark = pytest.mark.integration
T = TypeVar("T")
ROOT = Credentials(username=ROOT_USERNAME, password=ROOT_PASSWORD)


def run(
    make: Callable[[MilvusRBAC], Coroutine[Any, Any, T]],
    uri: str,
    credentials: Credentials = ROOT,
    timeout: float = 10,
    ca_pem: bytes = b"",
) -> T:
    async def go() -> T:
        endpoint = Endpoint(
            uri=uri,
            timeout_seconds=timeout,
            ca_pem=ca_pem,
            server_name="localhost" if ca_pem else "",
        )
        rbac = MilvusRBAC(endpoint, credentials)
        try:
            return await make(rbac)
        finally:
            await rbac.close()

    return asyncio.run(go())


@pytest.fixture
def alice(make_user: Callable[[], str]) -> str:
    return make_user()


@pytest.fixture
def reader(make_role: Callable[[], str]) -> str:
    return make_role()


def test_add_user_to_role_answers_success_and_grants(
    running_milvus: EmbeddedMilvus, milvus_admin: MilvusClient, alice: str, reader: str
) -> None:
    answer = run(lambda m: m.add_user_to_role(alice, reader), running_milvus.uri)
    assert answer.outcome is Outcome.SUCCESS
    assert (answer.code, answer.error_code, answer.operation) == (
        0,
        "Success",
        Operation.ADD_USER_TO_ROLE,
    )
    assert roles_of(milvus_admin, alice) == {reader}


def test_add_twice_is_success_both_times(
    running_milvus: EmbeddedMilvus, alice: str, reader: str
) -> None:
    async def twice(m: MilvusRBAC) -> list[Outcome]:
        return [(await m.add_user_to_role(alice, reader)).outcome for _ in range(2)]

    assert run(twice, running_milvus.uri) == [Outcome.SUCCESS, Outcome.SUCCESS]


def test_remove_user_from_role_revokes(
    running_milvus: EmbeddedMilvus, milvus_admin: MilvusClient, alice: str, reader: str
) -> None:
    milvus_admin.grant_role(alice, reader)
    answer = run(lambda m: m.remove_user_from_role(alice, reader), running_milvus.uri)
    assert answer.outcome is Outcome.SUCCESS
    assert roles_of(milvus_admin, alice) == set()


def test_remove_of_unbound_pair_and_of_missing_user_succeed(
    running_milvus: EmbeddedMilvus, alice: str, reader: str, unique: Callable[[str], str]
) -> None:
    assert run(lambda m: m.remove_user_from_role(alice, reader), running_milvus.uri).succeeded
    ghost = unique("ghost")
    assert run(lambda m: m.remove_user_from_role(ghost, reader), running_milvus.uri).succeeded


def test_missing_role_and_missing_user_are_classified(
    running_milvus: EmbeddedMilvus, alice: str, reader: str, unique: Callable[[str], str]
) -> None:
    no_role = run(lambda m: m.remove_user_from_role(alice, unique("norole")), running_milvus.uri)
    assert no_role.outcome is Outcome.ROLE_NOT_FOUND
    assert no_role.code == 65535
    no_user = run(lambda m: m.add_user_to_role(unique("nouser"), reader), running_milvus.uri)
    assert no_user.outcome is Outcome.USER_NOT_FOUND
    assert "not found the user" in no_user.reason


def test_invalid_name_is_classified(running_milvus: EmbeddedMilvus, reader: str) -> None:
    answer = run(lambda m: m.add_user_to_role("1bad", reader), running_milvus.uri)
    assert answer.outcome is Outcome.INVALID
    assert answer.code == 1100


def test_wrong_password_is_unauthenticated_and_never_echoed(
    running_milvus: EmbeddedMilvus, alice: str, reader: str
) -> None:
    password = "Wr0ng-Pa55word-xyzzy"
    wrong = Credentials(username=ROOT_USERNAME, password=password)
    answer = run(lambda m: m.add_user_to_role(alice, reader), running_milvus.uri, wrong)
    assert answer.outcome is Outcome.UNAUTHENTICATED
    assert password not in repr(answer)


def test_user_without_privileges_is_denied(
    running_milvus: EmbeddedMilvus, alice: str, reader: str
) -> None:
    limited = Credentials(username=alice, password=f"{alice}-pw")
    answer = run(lambda m: m.add_user_to_role(alice, reader), running_milvus.uri, limited)
    assert answer.outcome is Outcome.PERMISSION_DENIED


def test_closed_port_is_unavailable(closed_port: int, alice: str, reader: str) -> None:
    answer = run(lambda m: m.add_user_to_role(alice, reader), f"http://127.0.0.1:{closed_port}")
    assert answer.outcome is Outcome.UNAVAILABLE


def test_timeout_bounds_the_call(black_hole: int) -> None:
    answer = run(
        lambda m: m.add_user_to_role("alice", "reader", timeout=1),
        f"http://127.0.0.1:{black_hole}",
        timeout=30,
    )
    assert answer.outcome is Outcome.TIMEOUT
    assert "within 1s" in answer.reason


def test_server_version_means_reachable_and_authenticated(running_milvus: EmbeddedMilvus) -> None:
    answer, version = run(lambda m: m.get_server_version(), running_milvus.uri)
    assert answer.succeeded
    assert version.startswith("v2.3.5")


def test_client_recovers_after_milvus_restart(
    running_milvus: EmbeddedMilvus, milvus_admin: MilvusClient, alice: str, reader: str
) -> None:
    async def across_restart(m: MilvusRBAC) -> tuple[Outcome, Outcome, Outcome]:
        before = (await m.add_user_to_role(alice, reader)).outcome
        running_milvus.stop()
        during = (await m.remove_user_from_role(alice, reader, timeout=3)).outcome
        running_milvus.start()
        after = (await m.remove_user_from_role(alice, reader)).outcome
        return before, during, after

    assert run(across_restart, running_milvus.uri) == (
        Outcome.SUCCESS,
        Outcome.UNAVAILABLE,
        Outcome.SUCCESS,
    )
    assert roles_of(milvus_admin, alice) == set()


def test_embedded_milvus_allows_more_than_the_default_limits(
    running_milvus: EmbeddedMilvus,
    make_role: Callable[[], str],
    make_user: Callable[[], str],
    milvus_admin: MilvusClient,
) -> None:
    """Defaults are 10 roles and 100 users; tests and benchmarks need more."""
    roles = [make_role() for _ in range(12)]
    users = [make_user() for _ in range(101)]
    assert set(roles) <= set(milvus_admin.list_roles())
    assert set(users) <= set(milvus_admin.list_users())


def test_tls_with_the_right_ca_connects_and_grants(
    tls_milvus: TLSMilvus, unique: Callable[[str], str]
) -> None:
    uri, ca = tls_milvus.server.uri, tls_milvus.ca_pem
    answer, version = run(lambda m: m.get_server_version(), uri, ca_pem=ca)
    assert answer.succeeded, answer
    assert version.startswith("v2.3.5")
    admin = tls_milvus.admin()
    try:
        user, role = unique("tls_user"), unique("tls_role")
        admin.create_user(user, f"{user}-pw")
        admin.create_role(role)
        granted = run(lambda m: m.add_user_to_role(user, role), uri, ca_pem=ca)
        assert granted.succeeded, granted
        assert roles_of(admin, user) == {role}
    finally:
        admin.close()


def test_tls_with_a_ca_that_did_not_sign_fails_as_a_tls_error(tls_milvus: TLSMilvus) -> None:
    uri = tls_milvus.server.uri
    answer, _ = run(
        lambda m: m.get_server_version(), uri, ca_pem=tls_milvus.other_ca_pem, timeout=5
    )
    assert answer.outcome is Outcome.TLS, answer
    assert not answer.outcome.transient  # a wrong CA does not fix itself


def test_plaintext_to_a_tls_server_does_not_get_through(tls_milvus: TLSMilvus) -> None:
    plain = tls_milvus.server.uri.replace("https://localhost", "http://127.0.0.1")
    answer, _ = run(lambda m: m.get_server_version(), plain, timeout=5)
    assert not answer.succeeded
