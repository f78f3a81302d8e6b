"""A run's log streams: reading, appending, and following one until the run ends."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Callable, Protocol

from nimbus.client import api_path

if TYPE_CHECKING:
    from nimbus.workspace import Workspace

MAX_LOG_APPEND = 256 * 1024  # characters the server takes per append


class _LogSource(Protocol):
    def get_logs(self, stream: str = "stdout", offset: int = 0) -> dict: ...


def follow_logs(run: _LogSource, stream: str = "stdout", write: Callable[[str], object] | None = None,
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


class RunLogs:
    """Mixed into Run."""

    workspace: "Workspace"
    id: str

    def _logs_path(self, *more: str) -> str:
        return api_path("workspaces", self.workspace.name, "runs", self.id, "logs", *more)

    def get_logs(self, stream: str = "stdout", offset: int = 0) -> dict:
        """Text of a log stream from `offset`: {text, next_offset, run_status, run_ended}."""
        return self.workspace.client.get(self._logs_path(stream), offset=offset)

    def get_log_streams(self) -> list[dict]:
        return self.workspace.client.get(self._logs_path())["streams"]

    def append_log(self, text: str, stream: str = "stdout") -> None:
        for start in range(0, len(text), MAX_LOG_APPEND):
            self.workspace.client.post(self._logs_path(stream), {"text": text[start:start + MAX_LOG_APPEND]})

    def wait_for_completion(self, show_output: bool = False, stream: str = "stdout",
                            poll_seconds: float = 2.0) -> dict:
        """Blocks until the run ends (printing its log when `show_output`); returns its details."""
        write = (lambda text: (sys.stdout.write(text), sys.stdout.flush())) if show_output else None
        follow_logs(self, stream=stream, write=write, poll_seconds=poll_seconds)
        return self.get_details()
