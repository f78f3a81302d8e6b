"""In-memory telemetry aggregation: buckets, the latency histogram, thread safety, retry after a failed write."""
from __future__ import annotations

import random
import threading

import pytest

from chalicelib.scoring.telemetry_recorder import (
    TelemetryRecorder, bucket_ms, bucket_of, histogram_of, minute_label, percentile_ms, telemetry_sk,
)
from chalicelib.store.sqlite_table import SqliteTable
from chalicelib.store.table import Query

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a minute boundary


def test_histogram_buckets_are_ten_percent_wide():
    for latency_ms in (0.0005, 0.004, 0.3, 1.0, 7.5, 99.9, 1234.0, 600_000.0):
        index = bucket_of(latency_ms)
        low, high = 1.1 ** index / 1000, 1.1 ** (index + 1) / 1000
        assert latency_ms < 0.0011 or low <= latency_ms < high
        assert abs(bucket_ms(index) - latency_ms) <= 0.05 * latency_ms or latency_ms < 0.0011
    assert bucket_of(0) == 0 and bucket_of(1000) == 144  # 1 s is in bucket 144


def test_percentiles_from_a_histogram_are_within_five_percent():
    rng = random.Random(7)
    samples = [rng.lognormvariate(1.0, 1.0) for _ in range(20_000)]
    histogram: dict[int, int] = {}
    for value in samples:
        histogram[bucket_of(value)] = histogram.get(bucket_of(value), 0) + 1
    ordered = sorted(samples)
    for q in (50, 95, 99):
        exact = ordered[int(len(ordered) * q / 100) - 1]
        assert abs(percentile_ms(histogram, q) - exact) <= 0.06 * exact
    assert percentile_ms({}, 50) is None
    assert percentile_ms({10: 1}, 50) == percentile_ms({10: 1}, 99) == round(bucket_ms(10), 3)


def test_records_aggregate_per_minute_and_deployment():
    now = [T0 + 5]
    recorder = TelemetryRecorder("ws", "ep", clock=lambda: now[0])
    recorder.record("blue", 200, 2.0)
    recorder.record("blue", 500, 4.0)
    recorder.record("green", 200, 2.0)
    now[0] = T0 + 65
    recorder.record("blue", 504, 100.0)
    assert recorder.pending == 4
    assert minute_label(int(T0 // 60)) == "2027-01-15T08:00"
    assert telemetry_sk(int(T0 // 60), "blue") == "2027-01-15T08:00#blue"


def test_flush_writes_one_atomic_add_per_bucket(tmp_path):
    table = SqliteTable(tmp_path / "t.db")
    now = [T0 + 5]
    recorder = TelemetryRecorder("ws", "ep", clock=lambda: now[0])
    for latency in (1.0, 1.0, 3.0):
        recorder.record("blue", 200, latency)
    recorder.record("blue", 503, 9.0)
    recorder.record("green", 404, 2.0)  # a client mistake: a request, not an error
    written_before = table.writes
    assert recorder.flush(table) == 2 and table.writes - written_before == 2
    assert recorder.pending == 0 and recorder.flush(table) == 0
    recorder.record("blue", 200, 1.0)
    recorder.flush(table)  # the same minute again: counters add up
    blue = table.get("TELE#ws#ep", "2027-01-15T08:00#blue")
    assert blue["count"] == 5 and blue["errors"] == 1 and blue["deployment"] == "blue"
    assert blue["entity"] == "telemetry" and blue["minute"] == "2027-01-15T08:00"
    assert blue["expires"] == int(T0) + 60 + 30 * 86400
    assert histogram_of(blue) == {bucket_of(1.0): 3, bucket_of(3.0): 1, bucket_of(9.0): 1}
    assert blue["latency_ms_sum"] == pytest.approx(15.0)
    green = table.get("TELE#ws#ep", "2027-01-15T08:00#green")
    assert green["count"] == 1 and green["errors"] == 0


class _FailingOnce(SqliteTable):
    """A real table whose second write fails, as a store outage would."""

    calls = 0

    def update(self, update):
        self.calls += 1
        if self.calls == 2:
            raise ConnectionError("store unreachable")
        return super().update(update)


def test_a_failed_flush_keeps_what_was_not_written(tmp_path):
    table = _FailingOnce(tmp_path / "t.db")
    recorder = TelemetryRecorder("ws", "ep", clock=lambda: T0)
    for deployment in ("a", "b", "c"):
        recorder.record(deployment, 200, 1.0)
    with pytest.raises(ConnectionError):
        recorder.flush(table)
    assert recorder.pending == 2
    recorder.record("b", 200, 1.0)
    assert recorder.flush(table) == 2
    counts = {item["deployment"]: item["count"] for item in table.query_all(Query("TELE#ws#ep"))}
    assert counts == {"a": 1, "b": 2, "c": 1}


def test_recording_from_many_threads_loses_nothing(tmp_path):
    table = SqliteTable(tmp_path / "t.db")
    recorder = TelemetryRecorder("ws", "ep", clock=lambda: T0)
    stop = threading.Event()

    def flusher():
        while not stop.is_set():
            recorder.flush(table)

    def client(n):
        for i in range(2_000):
            recorder.record("blue", 500 if i % 10 == 0 else 200, 0.5 + n)

    background = threading.Thread(target=flusher)
    background.start()
    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    stop.set()
    background.join()
    recorder.flush(table)
    item = table.get("TELE#ws#ep", "2027-01-15T08:00#blue")
    assert item["count"] == 8_000 and item["errors"] == 800
    assert sum(histogram_of(item).values()) == 8_000
