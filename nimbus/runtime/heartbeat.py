"""A background beat: calls a function every few seconds until stopped, ignoring its failures.

The runner uses it to tell the service it is alive (POST …/runs/{id}/heartbeat): on AWS Batch a runner
that dies without a word (its host gone, killed outright) is noticed when the beats stop.
"""
from __future__ import annotations

import threading
from typing import Callable


class Heartbeat:
    def __init__(self, beat: Callable[[], object], interval_s: float):
        self.beat, self.interval_s = beat, interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nimbus-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)  # a beat in flight ends with its request's own timeout

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                pass
