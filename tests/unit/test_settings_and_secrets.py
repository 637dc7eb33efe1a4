"""Operator settings from the environment, and credentials from a Secret's data."""

from __future__ import annotations

import base64

import pytest

from milvus_rbac_operator.connections import credentials_from_secret
from milvus_rbac_operator.reconcile import UnusableConnectionError
from milvus_rbac_operator.settings import Settings
from milvus_rbac_operator.status import Reason


def test_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "MRBO_NAMESPACES": "team-a, team-b",
            "MRBO_RETRY_MAX_SECONDS": "5",
            "MRBO_PROTECTED_USERS": "ops",
        }
    )
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.retry_max_seconds == 5.0
    assert settings.protected_users == frozenset({"ops", "root"})


def test_root_is_always_protected() -> None:
    assert "root" in Settings.from_env({}).protected_users


@pytest.mark.parametrize("raw", ["abc", "-1", "0"])
def test_bad_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="MRBO_TIMEOUT_SECONDS"):
        Settings.from_env({"MRBO_TIMEOUT_SECONDS": raw})


def b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


def test_token_wins_over_username_and_password() -> None:
    creds = credentials_from_secret("s", {"token": b64(b"tok"), "username": b64(b"u")})
    assert creds.as_token() == "tok"


def test_username_and_password() -> None:
    creds = credentials_from_secret("s", {"username": b64(b"root"), "password": b64(b"pw\n")})
    assert creds.as_token() == "root:pw"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="empty"),
        pytest.param(None, id="no data"),
        pytest.param({"username": b64(b"root")}, id="no password"),
        pytest.param({"password": b64(b"pw")}, id="no username"),
        pytest.param({"token": b64(b"")}, id="empty token"),
        pytest.param({"token": b64(b"\xff\xfe\x00junk")}, id="binary junk"),
        pytest.param({"token": "not base64!"}, id="not base64"),
    ],
)
def test_unusable_secret_is_a_clear_secret_invalid(data: dict[str, str] | None) -> None:
    with pytest.raises(UnusableConnectionError) as caught:
        credentials_from_secret("creds", data)
    assert caught.value.readiness.reason is Reason.SECRET_INVALID
    assert "creds" in caught.value.readiness.message
