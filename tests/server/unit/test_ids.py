"""Ids (chalicelib/domain/ids.py): unique and in creation order within a process, even within one millisecond."""
from __future__ import annotations

import os
import re
import threading

import pytest

from chalicelib.domain import ids as ids_module
from chalicelib.domain.ids import new_id
from chalicelib.domain.ids import MonotonicIds
from chalicelib.services.model_uploads import UPLOAD_ID

NOW = 1_750_000_000.123
FORMAT = re.compile(r"[0-9a-f]{22}")


def test_ids_made_in_one_millisecond_are_unique_and_increasing():
    ids = MonotonicIds()
    made = [ids.new(lambda: NOW) for _ in range(10_000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert {i[:12] for i in made} == {f"{int(NOW * 1000):012x}"}
    assert all(FORMAT.fullmatch(i) and UPLOAD_ID.fullmatch(i) for i in made)


def test_ids_from_many_threads_in_one_millisecond_are_unique_and_increasing_per_thread():
    ids, start, per_thread = MonotonicIds(), threading.Barrier(8), {}

    def make(name: int) -> None:
        start.wait()
        per_thread[name] = [ids.new(lambda: NOW) for _ in range(2_000)]

    threads = [threading.Thread(target=make, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for made in per_thread.values() for i in made]
    assert len(everything) == len(set(everything)) == 16_000
    assert all(made == sorted(made) for made in per_thread.values())


def test_a_new_millisecond_follows_the_clock_and_a_clock_set_back_does_not_reorder_ids():
    ids, now = MonotonicIds(), [NOW]
    first = ids.new(lambda: now[0])
    now[0] += 0.002
    later = ids.new(lambda: now[0])
    assert later[:12] == f"{int(now[0] * 1000):012x}" and later > first
    now[0] -= 60  # the clock moved back: ids keep counting up from the last one
    assert ids.new(lambda: now[0]) == f"{int(later, 16) + 1:022x}"


def test_a_tail_that_overflows_carries_into_the_milliseconds(monkeypatch):
    ids = MonotonicIds()
    monkeypatch.setattr(ids_module.secrets, "randbits", lambda bits: 2**bits - 1)
    last_of_the_millisecond = ids.new(lambda: NOW)
    carried = ids.new(lambda: NOW)
    assert carried > last_of_the_millisecond and FORMAT.fullmatch(carried)
    assert carried == f"{int(NOW * 1000) + 1:012x}{0:010x}"


def test_new_id_is_one_generator_for_the_process():
    made = [new_id(lambda: NOW) for _ in range(100)] + [new_id() for _ in range(100)]
    assert made == sorted(made) and len(set(made)) == len(made)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_does_not_repeat_its_parents_next_id():
    new_id(lambda: NOW)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running any pytest machinery
        os.write(write, new_id(lambda: NOW).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    assert FORMAT.fullmatch(child) and child != new_id(lambda: NOW)
