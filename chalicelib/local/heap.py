"""The local platform's heap under glibc: two malloc arenas, and free memory handed back every minute.

glibc gives threads that contend for the heap arenas of their own (up to 8 per core), and keeps what
they free for reuse. On a long-lived server whose request threads take turns, freed memory is scattered
over those arenas, and the process's resident memory rises even though Python's own objects do not grow
(a 30-minute soak: bench/README.md, "soak.py"). Two arenas, and a periodic malloc_trim(0) (which also
returns free pages from the middle of the heap), keep it flat. Elsewhere (musl, macOS) nothing is done.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

M_ARENA_MAX = -8  # from glibc's malloc.h
ARENAS = 2
TRIM_SECONDS = 60.0
log = logging.getLogger(__name__)


def _glibc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "malloc_trim") else None


class Heap:
    def __init__(self):
        self._libc = _glibc()
        self._stop = threading.Event()

    @property
    def managed(self) -> bool:
        return self._libc is not None

    def limit_arenas(self) -> None:
        """Before the platform starts its threads: arenas are made as threads first contend."""
        if self._libc is not None and not self._libc.mallopt(M_ARENA_MAX, ARENAS):
            log.warning("glibc refused M_ARENA_MAX=%d", ARENAS)

    def start_trimming(self, every_s: float = TRIM_SECONDS) -> threading.Thread | None:
        if self._libc is None:
            return None

        def trim() -> None:
            while not self._stop.wait(every_s):
                self._libc.malloc_trim(0)

        thread = threading.Thread(target=trim, name="nimbus-heap-trim", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
