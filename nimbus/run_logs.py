"""Following a run's log stream until the run ends."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from nimbus.run import Run


def follow_logs(run: "Run", stream: str = "stdout", write: Callable[[str], object] | None = None,
                poll_seconds: float = 1.0, offset: int = 0, sleep: Callable[[float], None] = time.sleep) -> str:
    """Passes new log text to `write` until the run has ended and the stream is drained.

    Returns the run's final status. Each reply carries the run's status read before its text, so
    an empty reply from an ended run means the stream is complete.
    """
    while True:
        reply = run.get_logs(stream, offset)
        if reply["text"]:
            if write is not None:
                write(reply["text"])
            offset = reply["next_offset"]
            continue
        if reply["run_ended"]:
            return reply["run_status"]
        sleep(poll_seconds)
