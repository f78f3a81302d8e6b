"""SQLite's memory in a server process stays bounded however many threads read a large file: a soft heap
limit makes their per-connection page caches give pages back."""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

import pytest

from chalicelib.store.sqlite_table import SOFT_HEAP_LIMIT, SqliteTable
from chalicelib.store.table import Put, Query


def sqlite_library():
    """The libsqlite3 Python's sqlite3 module uses (a shared library: the one loaded in this process)."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("no shared libsqlite3 to ask for its memory")
    library = ctypes.CDLL(name)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library


def test_many_threads_reading_a_large_file_stay_under_the_soft_limit(tmp_path):
    table = SqliteTable(tmp_path / "nimbus.db")
    # ~16 MiB in 8 partitions: each thread's own 2 MiB cache would fill up with its partition without the limit
    for part in range(8):
        for batch in range(10):
            table.transact([Put({"pk": f"RUN#{part}", "sk": f"MET#{batch:02d}{n:03d}", "data": "x" * 2000})
                            for n in range(100)])
    library = sqlite_library()

    def read(part: int) -> None:
        for _ in range(3):
            assert table.query(Query(f"RUN#{part}")).items

    threads = [threading.Thread(target=read, args=(part,)) for part in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert library.sqlite3_memory_used() < SOFT_HEAP_LIMIT * 1.25
    assert table._connection().execute("PRAGMA soft_heap_limit").fetchone()[0] == SOFT_HEAP_LIMIT
