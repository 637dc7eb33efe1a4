"""Freed memory goes back to the system after a burst (glibc's malloc_trim)."""

from __future__ import annotations

import asyncio
import ctypes.util

import pytest

from milvus_rbac_operator import memory


def test_trim_is_found_on_glibc_and_runs() -> None:
    assert ctypes.util.find_library("c")  # these machines run glibc
    trim = memory._malloc_trim()
    assert trim is not None
    trim()


def test_trimming_runs_until_cancelled() -> None:
    async def run_briefly() -> None:
        task = asyncio.create_task(memory.trim_now_and_then(0.01))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_briefly())
