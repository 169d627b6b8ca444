"""glibc allocator tuning for a long-running Python process with many API threads.

Both calls are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import time
from typing import Any

M_ARENA_MAX = -8  # mallopt parameter number (glibc malloc.h)


@functools.cache
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas; call before the API threads start.

    Each thread otherwise may get an arena of its own that keeps freed memory (the
    MALLOC_ARENA_MAX=2 advice for threaded Python services, applied in-process).
    """
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.mallopt(M_ARENA_MAX, arenas)


_last_trim = 0.0


def release_memory(every_seconds: float = 30.0) -> None:
    """malloc_trim(0) at most every `every_seconds`: hand freed heap back after bursts."""
    global _last_trim
    now = time.monotonic()
    if now - _last_trim < every_seconds:
        return
    _last_trim = now
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)
