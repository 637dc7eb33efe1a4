"""Give memory freed after a burst of work back to the system.

Thousands of reconciles at once (a bulk apply, a restart) allocate many short-lived buffers
(JSON bodies, HTTP and gRPC messages) through the C allocator. Once they are freed, glibc keeps
the pages in its arenas, so the RSS stays at the burst's peak; malloc_trim returns them.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    if trim is None:
        return None
    return lambda: trim(0)


async def trim_now_and_then(interval: float) -> None:
    """Trim every `interval` seconds, for as long as the operator runs."""
    trim = _malloc_trim()
    if trim is None:
        logger.debug("malloc_trim is not available; freed memory stays with the allocator")
        return
    while True:
        await asyncio.sleep(interval)
        trim()
