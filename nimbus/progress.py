"""A one-line transfer progress bar on stderr, redrawn at most ten times a second on a terminal.

Elsewhere (a log, a notebook, a pipe) a redraw would stand as one more copy of the line, so there the
bar writes its final line only, once.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

WIDTH = 28
REDRAW_SECONDS = 0.1


def wanted(show: bool | None, stream: TextIO | None = None) -> bool:
    """An explicit choice wins; otherwise only a terminal gets a bar (logs and pipes stay clean)."""
    if show is not None:
        return show
    return _is_terminal(stream or sys.stderr)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """Thread-safe: parallel transfers may report into one bar."""

    def __init__(self, total: int, label: str = "", *, enabled: bool = True, stream: TextIO | None = None):
        self.total, self.label, self.enabled = max(0, total), label, enabled
        self.stream = stream or sys.stderr
        self.redraws = _is_terminal(self.stream)  # elsewhere a redraw would stay as a copy of the line
        self.done = 0
        self._lock = threading.Lock()
        self._drawn_at = 0.0

    def update(self, amount: int) -> None:
        with self._lock:
            self.done += amount
            now = time.monotonic()
            if self.enabled and self.redraws and now - self._drawn_at >= REDRAW_SECONDS:
                self._drawn_at = now
                self._draw()

    def close(self) -> None:
        if self.enabled:
            with self._lock:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _draw(self) -> None:
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        label = f"{self.label} " if self.label else ""
        start = "\r" if self.redraws else ""
        self.stream.write(f"{start}{label}[{bar}] {fraction:4.0%} {human_size(self.done)}/{human_size(self.total)}")
        self.stream.flush()


def human_size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"
