"""Scoring telemetry: requests aggregated in memory, written as per-minute counters with atomic adds.

A scoring process records every request (deployment, status, latency) into a bucket per (minute,
deployment) and flushes each bucket as ONE UpdateItem of atomic ADDs, so any number of processes can
write the same minute without reading it first. The item (docs/models-and-endpoints.md):

    pk  TELE#<workspace>#<endpoint>
    sk  <minute>#<deployment>        minute = "YYYY-MM-DDTHH:MM" in UTC: sorts as text, reads as a time
    count, errors, latency_ms_sum    errors = answers with status >= 500 (4xx are the client's mistakes)
    h<i>                             the latency histogram: requests whose latency fell in bucket i
    expires                          epoch seconds, 30 days after the minute (the table's TTL attribute)

Histogram bucket i covers latencies in [1.1^i, 1.1^(i+1)) MICROseconds (anything under 1.1 µs is in
bucket 0): a 10% relative width at every scale, 145 buckets up to 1 s, 212 up to 10 minutes, and a
busy minute touches only a handful. Percentiles read from it are within ±5% of the true value.

Standard library only: the scoring host's cold start includes this module.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Iterable, Mapping

GROWTH = 1.1
_LOG_GROWTH = math.log(GROWTH)
HISTOGRAM_PREFIX = "h"
TTL_S = 30 * 24 * 3600


def telemetry_pk(workspace: str, endpoint: str) -> str:
    return f"TELE#{workspace}#{endpoint}"


def minute_label(epoch_minute: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(epoch_minute * 60))


def telemetry_sk(epoch_minute: int, deployment: str) -> str:
    return f"{minute_label(epoch_minute)}#{deployment}"


def bucket_of(latency_ms: float) -> int:
    micros = latency_ms * 1000.0
    return int(math.log(micros) / _LOG_GROWTH) if micros >= GROWTH else 0


def bucket_ms(index: int) -> float:
    """A bucket's representative latency: its geometric middle, in milliseconds."""
    return GROWTH ** (index + 0.5) / 1000.0


def histogram_of(item: Mapping) -> dict[int, int]:
    """The histogram attributes of a stored item, as {bucket: count}."""
    found = {}
    for name, value in item.items():
        if name.startswith(HISTOGRAM_PREFIX) and name[1:].isdigit() and value:
            found[int(name[1:])] = int(value)
    return found


def percentile_ms(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0-100, nearest rank) of a histogram, in ms; None when it is empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(total * q / 100.0))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return round(bucket_ms(index), 3)
    return round(bucket_ms(max(histogram)), 3)


class _Bucket:
    __slots__ = ("count", "errors", "latency_ms_sum", "histogram")

    def __init__(self):
        self.count = 0
        self.errors = 0
        self.latency_ms_sum = 0.0
        self.histogram: dict[int, int] = {}

    def merge(self, other: "_Bucket") -> None:
        self.count += other.count
        self.errors += other.errors
        self.latency_ms_sum += other.latency_ms_sum
        for index, n in other.histogram.items():
            self.histogram[index] = self.histogram.get(index, 0) + n


class TelemetryRecorder:
    """Thread-safe: request threads record, one flusher writes."""

    def __init__(self, workspace: str, endpoint: str, clock: Callable[[], float] = time.time):
        self.workspace = workspace
        self.endpoint = endpoint
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[int, str], _Bucket] = {}

    def record(self, deployment: str, status: int, latency_ms: float) -> None:
        key = (int(self.clock() // 60), deployment)
        index = bucket_of(latency_ms)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket()
            bucket.count += 1
            bucket.errors += status >= 500
            bucket.latency_ms_sum += latency_ms
            bucket.histogram[index] = bucket.histogram.get(index, 0) + 1

    @property
    def pending(self) -> int:
        """Requests recorded but not yet written."""
        with self._lock:
            return sum(b.count for b in self._buckets.values())

    def flush(self, table) -> int:
        """Write every pending bucket (one atomic-add Update each); returns the number of items written.

        Buckets not written because a write failed are kept for the next flush, so a store outage
        delays telemetry instead of losing it.
        """
        from chalicelib.store.table import Key, Update  # light, and only needed by the flusher

        with self._lock:
            taken, self._buckets = self._buckets, {}
        items = sorted(taken.items())
        pk = telemetry_pk(self.workspace, self.endpoint)
        for done, ((minute, deployment), bucket) in enumerate(items):
            add = {"count": bucket.count, "errors": bucket.errors,
                   "latency_ms_sum": round(bucket.latency_ms_sum, 3)}
            add.update({f"{HISTOGRAM_PREFIX}{i}": n for i, n in bucket.histogram.items()})
            update = Update(Key(pk, telemetry_sk(minute, deployment)), add=add,
                            set={"expires": (minute + 1) * 60 + TTL_S},
                            set_if_absent={"entity": "telemetry", "minute": minute_label(minute),
                                           "deployment": deployment})
            try:
                table.update(update)
            except BaseException:
                self._restore(items[done:])
                raise
        return len(items)

    def _restore(self, items: Iterable[tuple[tuple[int, str], _Bucket]]) -> None:
        with self._lock:
            for key, bucket in items:
                current = self._buckets.get(key)
                if current is None:
                    self._buckets[key] = bucket
                else:
                    current.merge(bucket)
