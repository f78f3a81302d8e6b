"""Ids of runs, snapshots and other items: unique, and in creation order within one process."""
from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Callable


class MonotonicIds:
    """Ids that sort in the order they were made, within one process (a ULID's monotonic mode).

    An id is 22 lowercase hex digits: 12 of milliseconds, then a 40-bit tail. The first id of a
    millisecond draws its tail at random; the next ones in the same millisecond (or while the clock
    stands behind the last id, if it was set back) add one to the last id instead, so two runs made in
    one millisecond still sort in creation order. A tail that overflows carries into the milliseconds.
    """

    TAIL_BITS = 40

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0  # the last id handed out, as a number: milliseconds << TAIL_BITS | tail

    def new(self, clock: Callable[[], float] = time.time) -> str:
        millis = int(clock() * 1000)
        with self._lock:
            if millis > self._last >> self.TAIL_BITS:
                self._last = millis << self.TAIL_BITS | secrets.randbits(self.TAIL_BITS)
            else:
                self._last += 1
            value = self._last
        return f"{value:022x}"

    def forget(self) -> None:
        """A forked child starts afresh (random tails again), so it never repeats its parent's next id."""
        self._lock = threading.Lock()
        self._last = 0


_IDS = MonotonicIds()
os.register_at_fork(after_in_child=_IDS.forget)


def new_id(clock: Callable[[], float] = time.time) -> str:
    """Unique, and in creation order within this process: see MonotonicIds."""
    return _IDS.new(clock)
