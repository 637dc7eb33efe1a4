"""Readable logs: kopf's routine successes are DEBUG, everything else passes through."""

from __future__ import annotations

import asyncio
import logging

import kopf
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from milvus_rbac_operator.cli import RoutineSuccessIsDebug
from milvus_rbac_operator.kubeclient import temporary_on_api_outage


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    "message",
    [
        "Timer 'recheck' succeeded.",
        "Timer 'drift' succeeded.",
        "Handler 'build_registry.<locals>.track_binding' succeeded.",
        "Handler 'track_connection' succeeded.",
    ],
)
def test_routine_successes_are_hidden_at_info(message: str) -> None:
    logging.getLogger().setLevel(logging.INFO)
    assert not RoutineSuccessIsDebug().filter(record(message))


@pytest.mark.parametrize(
    "message",
    ["Handler 'reconcile' succeeded.", "Timer 'drift' failed with an exception. Will retry."],
)
def test_everything_else_is_kept(message: str) -> None:
    logging.getLogger().setLevel(logging.INFO)
    assert RoutineSuccessIsDebug().filter(record(message))


def test_routine_successes_show_at_debug() -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        assert RoutineSuccessIsDebug().filter(record("Timer 'drift' succeeded."))
    finally:
        logging.getLogger().setLevel(logging.WARNING)


def test_an_unreachable_api_server_is_a_temporary_error_not_a_traceback() -> None:
    async def refused() -> None:
        raise urllib3.exceptions.MaxRetryError(None, "/apis", "Connection refused")  # type: ignore[arg-type]

    async def overloaded() -> None:
        raise ApiException(status=503)

    async def not_found() -> None:
        raise ApiException(status=404)

    for failing in (refused, overloaded):
        with pytest.raises(kopf.TemporaryError):
            asyncio.run(temporary_on_api_outage(failing)())
    with pytest.raises(ApiException):
        asyncio.run(temporary_on_api_outage(not_found)())
