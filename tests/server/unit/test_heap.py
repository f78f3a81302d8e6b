"""The local platform's heap settings under glibc (chalicelib/local/heap.py)."""
from __future__ import annotations

import threading

import pytest

from chalicelib.local.heap import ARENAS, M_ARENA_MAX, Heap


class RecordingLibc:
    def __init__(self):
        self.calls, self.trimmed = [], threading.Event()

    def mallopt(self, option, value):
        self.calls.append(("mallopt", option, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        self.trimmed.set()
        return 1


def test_this_machine_has_glibc_and_takes_the_arena_limit():
    heap = Heap()
    if not heap.managed:
        pytest.skip("not glibc")
    assert heap._libc.mallopt(M_ARENA_MAX, ARENAS) == 1


def test_arenas_are_limited_and_the_heap_trimmed_until_stopped():
    heap, libc = Heap(), RecordingLibc()
    heap._libc = libc
    heap.limit_arenas()
    thread = heap.start_trimming(every_s=0.01)
    assert libc.trimmed.wait(5)
    heap.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert libc.calls[0] == ("mallopt", M_ARENA_MAX, ARENAS) and ("malloc_trim", 0) in libc.calls


def test_without_glibc_nothing_is_done():
    heap = Heap()
    heap._libc = None
    heap.limit_arenas()
    assert heap.start_trimming() is None and not heap.managed
