"""Sampled request/response capture: a share of scoring requests, stored in the blob store as JSON.

`<capture_prefix><yyyy-mm-dd>/<id>.json` holds {ts, deployment, status, request, response} (request
and response as JSON when they parse, else as text). Writes happen on a background thread from a
bounded queue: capture never slows a request down and never fails one; when the store falls behind,
samples are dropped (and counted).
"""
from __future__ import annotations

import json
import os
import queue
import random
import sys
import threading
import time
from typing import Any, Callable

QUEUE_LIMIT = 1000


def _blobs_from_settings():
    """Imported here, on the writer thread: the store is not part of the host's cold start."""
    from chalicelib.settings import Settings  # here: see the docstring
    from chalicelib.store.factory import build_blobs

    return build_blobs(Settings.from_env())


class Capture:
    def __init__(self, deployment: str, prefix: str, rate: float,
                 blobs_factory: Callable[[], Any] = _blobs_from_settings, clock: Callable[[], float] = time.time):
        self.deployment = deployment
        self.prefix = prefix
        self.rate = max(0.0, min(1.0, float(rate or 0.0))) if prefix else 0.0
        self.blobs_factory = blobs_factory
        self.clock = clock
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0.0

    def offer(self, status: int, request: bytes, response: bytes) -> None:
        """Maybe capture one exchange (probability `rate`); returns at once."""
        if self.rate <= 0.0 or (self.rate < 1.0 and random.random() >= self.rate):
            return
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait((self.clock(), status, request, response))
        except queue.Full:
            self.dropped += 1

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (up to `timeout_s`) until every queued sample is written: at shutdown, or per Lambda call."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_loop, name="nimbus-capture", daemon=True)
                self._thread.start()

    def _write_loop(self) -> None:
        blobs = None
        while True:
            sample = self._queue.get()
            try:
                if blobs is None:
                    blobs = self.blobs_factory()
                key, data = self.document(*sample)
                blobs.put_bytes(key, data, "application/json")
                self.written += 1
            except Exception as err:  # noqa: BLE001 - a capture problem must never reach a request
                self.dropped += 1
                print(f"request capture failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            finally:
                self._queue.task_done()

    def document(self, ts: float, status: int, request: bytes, response: bytes) -> tuple[str, bytes]:
        """The blob key and bytes of one captured exchange."""
        ident = f"{int(ts * 1000):012x}{os.urandom(5).hex()}"  # time-ordered, unique
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
        body = {"ts": stamp, "deployment": self.deployment, "status": status,
                "request": _as_json(request), "response": _as_json(response)}
        return f"{self.prefix}{day}/{ident}.json", json.dumps(body, separators=(",", ":")).encode()


def _as_json(data: bytes) -> Any:
    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
