"""Process-wide metric buffering: logging appends in memory, one daemon thread sends batches.

`append` only takes a lock and appends to lists, so a training loop never waits on the network.
The sender wakes every `interval` seconds, or as soon as `flush_points` points are waiting, and
sends each run's points as columnar batches. Every batch gets a time-ordered id before its first
attempt and keeps it on every retry: the server stores a batch once per id, so retries never double.
"""
from __future__ import annotations

import atexit
import math
import operator
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Hashable

from nimbus.client import ApiClient, backoff
from nimbus.exceptions import InvalidError, NimbusError, ServiceUnavailableError
from nimbus.metric_values import check_name, strict_json

FLUSH_INTERVAL = 1.0
FLUSH_POINTS = 10_000
MAX_BATCH_POINTS = 20_000
MAX_BATCH_BYTES = 4_000_000
MAX_BATCH_ENTRIES = 1000  # the server takes at most this many entries per request
RETRY_SECONDS = 120.0  # how long an unavailable service is retried before its points are given up
EXIT_WAIT_SECONDS = 30.0  # how long the interpreter's exit keeps retrying the last points


class _Series:
    __slots__ = ("kind", "values", "steps", "timestamps")

    def __init__(self, kind: str):
        self.kind, self.values, self.steps, self.timestamps = kind, [], [], []


class RunStream:
    """One run's metrics: what waits to be sent, and how much of what was logged is settled."""

    def __init__(self, client: ApiClient, path: str):
        self.client, self.path = client, path
        self.rank = process_rank()  # every point sent carries it, so a distributed run's ranks stay apart
        self.series: dict[str, _Series] = {}
        self.kinds: dict[str, str] = {}
        self.next_step: dict[str, int] = {}
        self.logged = 0  # points appended
        self.settled = 0  # points the server acknowledged or refused
        self.refused = 0
        self.error: NimbusError | None = None


@dataclass
class MetricBatch:
    stream: RunStream
    entries: list[dict]
    points: int
    batch_id: str = ""  # given just before the first attempt, so ids follow the order of sending
    _entries_json: bytes | None = field(default=None, repr=False)

    def entries_json(self) -> bytes:
        if self._entries_json is None:
            self._entries_json = strict_json(self.entries)
        return self._entries_json

    def body(self) -> bytes:
        if not self.batch_id:
            self.batch_id = new_batch_id()
        return b'{"batch_id":"' + self.batch_id.encode() + b'","metrics":' + self.entries_json() + b"}"


class MetricsBuffer:
    def __init__(self, interval: float = FLUSH_INTERVAL, flush_points: int = FLUSH_POINTS,
                 max_points: int = MAX_BATCH_POINTS, max_bytes: int = MAX_BATCH_BYTES,
                 retry_seconds: float = RETRY_SECONDS):
        self.interval, self.flush_points = interval, flush_points
        self.max_points, self.max_bytes, self.retry_seconds = max_points, max_bytes, retry_seconds
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._send_lock = threading.Lock()  # one sender at a time keeps each run's batches in order
        self._wake = threading.Event()
        self._waking = False
        self._buffered = 0
        self._streams: dict[Hashable, RunStream] = {}
        self._thread: threading.Thread | None = None
        self._give_up_at = math.inf  # a deadline for every retry, however far its own one is

    def give_up_after(self, seconds: float) -> None:
        """Stops retrying an unavailable service `seconds` from now (used when the process exits)."""
        self._give_up_at = time.monotonic() + seconds

    # --- logging (the hot path) --------------------------------------------------------------------
    def append(self, key: Hashable, client: ApiClient, path: str, name: str, kind: str, value: Any,
               step: int | None = None) -> None:
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = RunStream(client, path)
            if step is None:
                step = stream.next_step.get(name, 0)
            else:
                step = _checked_step(name, step)
            if stream.kinds.get(name) != kind:
                _register_name(stream, name, kind)
            series = stream.series.get(name)
            if series is None:
                series = stream.series[name] = _Series(kind)
            stream.next_step[name] = step + 1
            series.values.append(value)
            series.steps.append(step)
            series.timestamps.append(time.time())
            stream.logged += 1
            self._buffered += 1
            if self._buffered >= self.flush_points and not self._waking:
                self._waking = True
                self._wake.set()
        if self._thread is None:
            self._start_sender()

    # --- flushing ---------------------------------------------------------------------------------
    def flush(self, key: Hashable | None = None, timeout: float | None = None) -> None:
        """Blocks until everything logged so far (for one run, or all) is settled; raises what was refused."""
        with self._lock:
            if key is None:
                streams = list(self._streams.values())
            else:
                streams = [self._streams[key]] if key in self._streams else []
            targets = [(s, s.logged) for s in streams]
        if any(s.settled < logged for s, logged in targets):
            # Send from this thread: handing over to the sender thread costs a GIL switch (~5 ms).
            self.send_pending()
            with self._settled:
                if not self._settled.wait_for(lambda: all(s.settled >= n for s, n in targets), timeout):
                    raise ServiceUnavailableError(f"metrics were not all sent within {timeout} seconds")
        with self._lock:
            errors = [e for e in (_take_error(s) for s in streams) if e is not None]
        if errors:
            raise errors[0]

    def forget(self, key: Hashable) -> None:
        """Drops a finished run's bookkeeping once nothing of it is waiting or unreported."""
        with self._lock:
            stream = self._streams.get(key)
            if stream is not None and stream.settled == stream.logged and stream.error is None:
                del self._streams[key]

    def send_pending(self) -> None:
        """Sends every waiting point now, in the calling thread.

        Retries share one deadline per call: once a service has stayed unavailable past it, that
        service's remaining batches are given up at once instead of each waiting out its own.
        """
        with self._send_lock:
            deadline, unreachable = time.monotonic() + self.retry_seconds, {}
            for batch in self._take_batches():
                for part in self._fitted(batch):
                    service = part.stream.client.url
                    if service in unreachable:
                        self._settle(part, unreachable[service])
                        continue
                    part.batch_id = new_batch_id()
                    error = self.deliver(part, deadline)
                    if isinstance(error, ServiceUnavailableError):
                        unreachable[service] = error

    # --- sending ----------------------------------------------------------------------------------
    def send(self, batch: MetricBatch) -> dict:
        """One attempt to store a batch (repeating it with the same batch id stores nothing twice)."""
        return batch.stream.client.request("POST", batch.stream.path, data=batch.body(), retry=False)

    def deliver(self, batch: MetricBatch, deadline: float | None = None) -> NimbusError | None:
        """Sends a batch, retrying while the service is unavailable, then settles it either way."""
        deadline = time.monotonic() + self.retry_seconds if deadline is None else deadline
        deadline = min(deadline, self._give_up_at)
        attempt, error = 0, None
        while True:
            try:
                self.send(batch)
                break
            except ServiceUnavailableError as err:
                pause = backoff(attempt, base=0.5, cap=10.0)
                if time.monotonic() + pause > deadline:
                    error = err
                    break
                time.sleep(pause)
                attempt += 1
            except NimbusError as err:
                error = err
                break
            except Exception as err:  # noqa: BLE001 - the sender thread must survive anything
                error = NimbusError(f"sending metrics failed: {err}")
                break
        self._settle(batch, error)
        return error

    def _settle(self, batch: MetricBatch, error: NimbusError | None) -> None:
        with self._settled:
            stream = batch.stream
            stream.settled += batch.points
            if error is not None:
                stream.refused += batch.points
                stream.error = stream.error or error
            self._settled.notify_all()

    def _take_batches(self) -> list[MetricBatch]:
        batches = []
        with self._lock:
            for stream in self._streams.values():
                while stream.series:
                    batches.append(self._cut(stream))
            self._buffered = 0
        return batches

    def _cut(self, stream: RunStream) -> MetricBatch:
        """Takes up to max_points of a run's waiting points (whole lists when they fit, no copies)."""
        entries, budget = [], self.max_points
        for name in list(stream.series):
            if budget == 0 or len(entries) == MAX_BATCH_ENTRIES:
                break
            series = stream.series[name]
            take = min(budget, len(series.values))
            if take == len(series.values):
                del stream.series[name]
                values, steps, stamps = series.values, series.steps, series.timestamps
            else:
                values, steps, stamps = series.values[:take], series.steps[:take], series.timestamps[:take]
                del series.values[:take], series.steps[:take], series.timestamps[:take]
            entry = {"name": name, "type": series.kind, "values": values, "steps": steps, "timestamps": stamps}
            if stream.rank is not None:
                entry["rank"] = stream.rank
            entries.append(entry)
            budget -= take
        return MetricBatch(stream, entries, self.max_points - budget)

    def _fitted(self, batch: MetricBatch) -> list[MetricBatch]:
        """The batch, halved until each part's JSON fits max_bytes."""
        if len(batch.entries_json()) + 64 <= self.max_bytes or batch.points <= 1:
            return [batch]
        first, second = _split(batch)
        return self._fitted(first) + self._fitted(second)

    # --- the sender thread ------------------------------------------------------------------------
    def _start_sender(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run_sender, name="nimbus-metrics", daemon=True)
        try:
            self._thread.start()
        except RuntimeError:
            pass  # no new threads at interpreter exit: flush() then sends in the calling thread

    def _run_sender(self) -> None:
        while True:
            self._wake.wait(self.interval)
            with self._lock:
                self._wake.clear()
                self._waking = False
            try:
                self.send_pending()
            except Exception as err:  # noqa: BLE001 - never let the thread die
                print(f"nimbus: metrics sender error: {err}", file=sys.stderr)


def _register_name(stream: RunStream, name: str, kind: str) -> None:
    known = stream.kinds.get(name)
    if known is not None:
        raise InvalidError(f"metric {name!r} is a {known} metric; it cannot take {kind} values", field="name")
    check_name(name)
    stream.kinds[name] = kind


def _checked_step(name: str, step: Any) -> int:
    try:
        step = operator.index(step)
    except TypeError:
        raise InvalidError(f"metric {name!r}: step must be an integer", field="step") from None
    if step < 0:
        raise InvalidError(f"metric {name!r}: step must be >= 0", field="step")
    return step


def _take_error(stream: RunStream) -> NimbusError | None:
    error, refused = stream.error, stream.refused
    if error is None:
        return None
    stream.error, stream.refused = None, 0
    return type(error)(f"{refused} metric points were not stored: {error.message}", status=error.status,
                       code=error.code, field=error.field, details=error.details)


def _split(batch: MetricBatch) -> tuple[MetricBatch, MetricBatch]:
    half, first, second, seen = batch.points // 2, [], [], 0
    for entry in batch.entries:
        count = len(entry["values"])
        cut = max(0, min(count, half - seen))
        if cut:
            first.append({**entry, **{k: entry[k][:cut] for k in ("values", "steps", "timestamps")}})
        if cut < count:
            second.append({**entry, **{k: entry[k][cut:] for k in ("values", "steps", "timestamps")}})
        seen += count
    return MetricBatch(batch.stream, first, half), MetricBatch(batch.stream, second, batch.points - half)


def process_rank() -> int | None:
    """This process's rank in a distributed run (NIMBUS_RANK, set by the runner), None outside one."""
    text = os.environ.get("NIMBUS_RANK", "")
    return int(text) if text.isascii() and text.isdigit() else None


# --- batch ids ------------------------------------------------------------------------------------
_id_lock = threading.Lock()
_last_id = (0, 0)


def new_batch_id() -> str:
    """12 hex digits of milliseconds then 10 random hex digits, strictly increasing in this process."""
    global _last_id
    with _id_lock:
        millis, random_part = int(time.time() * 1000), int.from_bytes(secrets.token_bytes(5), "big")
        last_millis, last_random = _last_id
        if millis <= last_millis:  # same millisecond (or the clock stepped back): count up from the last id
            millis, random_part = last_millis, last_random + 1
            if random_part >= 1 << 40:
                millis, random_part = millis + 1, 0
        _last_id = (millis, random_part)
    return f"{millis:012x}{random_part:010x}"


# --- the process-wide buffer ------------------------------------------------------------------------
_buffer: MetricsBuffer | None = None
_buffer_lock = threading.Lock()


def buffer() -> MetricsBuffer:
    global _buffer
    current = _buffer
    if current is None:
        with _buffer_lock:
            if _buffer is None:
                _buffer = MetricsBuffer()
            current = _buffer
    return current


def _flush_at_exit() -> None:
    if _buffer is None:
        return
    _buffer.give_up_after(EXIT_WAIT_SECONDS)
    try:
        _buffer.flush(timeout=EXIT_WAIT_SECONDS + 10)
    except NimbusError as err:
        print(f"nimbus: {err}", file=sys.stderr)


def _forget_buffer_in_child() -> None:
    # A forked child has no sender thread and must not resend its parent's points.
    global _buffer, _buffer_lock
    _buffer, _buffer_lock = None, threading.Lock()


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_buffer_in_child)
