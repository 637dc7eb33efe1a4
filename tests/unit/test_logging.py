"""Readable logs: kopf's routine successes are DEBUG, everything else passes through."""

from __future__ import annotations

import logging

import pytest

from milvus_rbac_operator.cli import RoutineSuccessIsDebug


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    "message",
    [
        "Timer 'recheck' succeeded.",
        "Timer 'drift' succeeded.",
        "Handler 'check_policy_in_namespace' succeeded.",
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
