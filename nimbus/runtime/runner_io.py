"""The script's process as the runner sees it: its output pipes, streamed to the run's logs, and its
resource use."""
from __future__ import annotations

import codecs
import collections
import contextlib
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, TextIO

import psutil

from nimbus.exceptions import NimbusError, ServiceUnavailableError
from nimbus.runtime.secret_mask import SecretMask

FLUSH_CHARS = 64 * 1024  # send as soon as this much text waits...
FLUSH_SECONDS = 0.5  # ...or once the oldest waiting text is this old
MAX_APPEND = 256 * 1024  # characters the service takes per append
MAX_PENDING = 4 * 1024 * 1024  # characters held per stream before the script is made to wait
READ_SIZE = 64 * 1024
TAIL_CHARS = 16 * 1024
RETRY_PAUSE = 1.0
LEFTOVER_GRACE = 2.0  # after the script exits, how long processes it left behind may hold its pipes
KILL_GRACE = 5.0  # between SIGTERM and SIGKILL when the run ends under the script


class RunEnded(Exception):
    """The run reached a final state elsewhere (canceled, or ended by the script): stop quietly."""


class LogPump:
    """Copies one output pipe of the script to a run log stream, in chunks, while the script runs.

    A reader thread drains the pipe; a sender thread posts what waits. Text waits in a bounded buffer:
    when it is full the reader stops reading, so the script waits on its own writes rather than the
    runner's memory growing. Only while the service is unreachable is the oldest text dropped instead,
    so a network outage cannot stall the script; the local copy (`echo`) keeps everything.
    The secret values in `mask` are replaced by *** as text is read, before it is echoed, kept or sent.
    """

    def __init__(self, pipe: IO[bytes], send: Callable[[str], None], *, echo: TextIO | None = None,
                 flush_chars: int = FLUSH_CHARS, flush_seconds: float = FLUSH_SECONDS,
                 max_append: int = MAX_APPEND, max_pending: int = MAX_PENDING, retry_pause: float = RETRY_PAUSE,
                 mask: SecretMask | None = None):
        self._pipe, self._send, self._echo = pipe, send, echo
        self._masked = mask.stream() if mask is not None else None
        self._flush_chars, self._flush_seconds = flush_chars, flush_seconds
        self._max_append, self._max_pending, self._retry_pause = max_append, max(max_pending, max_append), retry_pause
        self._lock = threading.Condition()
        self._pending: collections.deque[str] = collections.deque()
        self._pending_chars = 0
        self._oldest_at = 0.0  # when the oldest waiting text arrived
        self._closed = False  # the pipe reached its end (or was abandoned)
        self._unreachable = False
        self._dropped = 0  # characters dropped and not yet mentioned in the log
        self.ended = threading.Event()  # the service said the run is over
        self._abandon = threading.Event()
        self._tail = ""
        self._threads = [threading.Thread(target=self._read, name="nimbus-log-reader", daemon=True),
                         threading.Thread(target=self._post, name="nimbus-log-sender", daemon=True)]

    def start(self) -> "LogPump":
        for thread in self._threads:
            thread.start()
        return self

    def wait(self) -> None:
        """Returns once the pipe is drained and everything read was sent (or given up); closes the pipe."""
        for thread in self._threads:
            thread.join()
        self._pipe.close()

    def wait_read(self, timeout: float | None = None) -> bool:
        """True once the pipe has reached its end (every holder closed it)."""
        self._threads[0].join(timeout)
        return not self._threads[0].is_alive()

    def abandon(self) -> None:
        """Stops reading a pipe that stays open (a leftover process holds it); what was read is still sent."""
        self._abandon.set()

    def tail(self, lines: int = 20, max_chars: int = 4000) -> str:
        with self._lock:
            text = self._tail
        return "\n".join(text.rstrip("\n").split("\n")[-lines:])[-max_chars:]

    # --- reading ------------------------------------------------------------------------------------
    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        fd = self._pipe.fileno()
        try:
            while not self._abandon.is_set():
                # select with a timeout, so abandon() is noticed even when no byte ever comes
                if not select.select([fd], [], [], 0.2)[0]:
                    continue
                data = os.read(fd, READ_SIZE)
                if not data:
                    break
                self._add(self._mask(decoder.decode(data)))
            self._add(self._mask(decoder.decode(b"", final=True)) + (self._masked.end() if self._masked else ""))
        finally:
            with self._lock:
                self._closed = True
                self._lock.notify_all()

    def _mask(self, text: str) -> str:
        return self._masked.feed(text) if self._masked is not None else text

    def _add(self, text: str) -> None:
        if not text:
            return
        if self._echo is not None:
            try:
                self._echo.write(text)
                self._echo.flush()
            except (OSError, ValueError):
                self._echo = None
        with self._lock:
            self._tail = (self._tail + text)[-TAIL_CHARS:]
            if self.ended.is_set():
                return  # nobody takes this text any more; keep draining so the script never blocks
            while self._pending and self._pending_chars + len(text) > self._max_pending and not self._unreachable:
                self._lock.wait(0.5)
                if self.ended.is_set():
                    return
            if not self._pending:
                self._oldest_at = time.monotonic()
            self._pending.append(text)
            self._pending_chars += len(text)
            while self._pending_chars > self._max_pending:  # only while unreachable: drop the oldest
                self._dropped += len(self._take(self._pending_chars - self._max_pending))
            self._lock.notify_all()

    # --- sending ------------------------------------------------------------------------------------
    def _post(self) -> None:
        while True:
            with self._lock:
                while not self._due():
                    timeout = None if not self._pending else self._oldest_at + self._flush_seconds - time.monotonic()
                    self._lock.wait(timeout)
                if not self._pending:
                    return  # closed and drained
                text = self._next_chunk()
                self._lock.notify_all()  # room for the reader
            try:
                self._send(text)
                with self._lock:
                    self._unreachable = False
            except RunEnded:
                with self._lock:
                    self.ended.set()
                    self._discard()
                return
            except ServiceUnavailableError as err:
                if not self._requeue(text):
                    note(f"could not send the end of a log ({err}); it is kept in the runner's own output only")
                    return
            except NimbusError as err:  # refused (it should not be): lose this chunk, keep the rest
                note(f"a log chunk was refused: {err}")

    def _due(self) -> bool:
        if self._closed or self._pending_chars >= self._flush_chars:
            return True
        return bool(self._pending) and time.monotonic() - self._oldest_at >= self._flush_seconds

    def _next_chunk(self) -> str:
        marker = ""
        if self._dropped:
            marker = f"\n[nimbus: {self._dropped} characters of log were dropped while the service was unreachable]\n"
            self._dropped = 0
        return marker + self._take(self._max_append - len(marker))

    def _requeue(self, text: str) -> bool:
        """Puts unsent text back in front; False when the pipe is closed (then nothing more is tried)."""
        with self._lock:
            self._unreachable = True
            if self._closed:
                self._discard()
                return False
            self._pending.appendleft(text)
            self._pending_chars += len(text)
            self._oldest_at = time.monotonic()
            self._lock.notify_all()  # the reader may drop rather than wait now
            resume = time.monotonic() + self._retry_pause
            while not self._closed and (left := resume - time.monotonic()) > 0:
                self._lock.wait(left)
            return True

    def _take(self, limit: int) -> str:
        parts, size = [], 0
        while self._pending and size < limit:
            piece = self._pending.popleft()
            if size + len(piece) > limit:
                cut = limit - size
                self._pending.appendleft(piece[cut:])
                piece = piece[:cut]
            parts.append(piece)
            size += len(piece)
        self._pending_chars -= size
        if self._pending:
            self._oldest_at = time.monotonic()
        return "".join(parts)

    def _discard(self) -> None:
        self._pending.clear()
        self._pending_chars = 0
        self._lock.notify_all()


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    duration_s: float
    peak_memory_mb: float
    cpu_time_s: float
    stderr_tail: str
    run_ended: bool = False  # the service closed the run while the script ran
    rank: int | None = None  # of a distributed script: the first rank that failed


class ScriptProcess:
    """The script in its own process group (so a signal reaches all it started), its pipes pumped
    to the run's logs, and its resource use measured.

    Memory is polled as the sum over the live process tree; getrusage adds what polling misses: the
    CPU of every descendant that was waited for, and the largest process of a short-lived script.
    """

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], sender: Callable[[str], Callable[[str], None]],
                 *, echo: bool = True, poll_seconds: float = 0.25, popen_options: dict | None = None,
                 mask: SecretMask | None = None):
        """`popen_options`: more of subprocess.Popen's arguments, which confine the script
        (nimbus/runtime/run_isolation.py); `mask` turns the secret values the run read into ***."""
        self._argv, self._cwd, self._env, self._sender, self._echo = argv, cwd, env, sender, echo
        self._popen_options = dict(popen_options or {})
        self._mask = mask
        self._poll_seconds = poll_seconds
        self._peak_rss = 0
        self._waited = threading.Event()
        self._ended = threading.Event()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Raises OSError when the program cannot be started (SubprocessError when its confinement fails)."""
        self._before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._started = time.monotonic()
        self.process = subprocess.Popen(self._argv, cwd=self._cwd, env=self._env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0,
                                        **self._popen_options)
        self._pumps = [LogPump(self.process.stdout, self._sender("stdout"), echo=sys.stdout if self._echo else None,
                               mask=self._mask),
                       LogPump(self.process.stderr, self._sender("stderr"), echo=sys.stderr if self._echo else None,
                               mask=self._mask)]
        for pump in self._pumps:
            pump.start()
        threading.Thread(target=self._poll_memory, name="nimbus-meter", daemon=True).start()

    def signal(self, signum: int) -> None:
        if self.process is not None:
            signal_group(self.process.pid, signum)

    def end(self) -> None:
        """The run is no longer this runner's (it ended, or another runner holds it): wait() stops the
        script as when the service closes its logs (SIGTERM, then SIGKILL after KILL_GRACE)."""
        self._ended.set()

    def wait(self) -> Outcome:
        ended_at = None
        while True:
            try:
                exit_code = self.process.wait(0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            if ended_at is None and (self._ended.is_set() or any(p.ended.is_set() for p in self._pumps)):
                ended_at = time.monotonic()  # the service closed the run: the script's work is moot
                self.signal(signal.SIGTERM)
            elif ended_at is not None and time.monotonic() - ended_at > KILL_GRACE:
                self.signal(signal.SIGKILL)
        duration = time.monotonic() - self._started
        self._waited.set()
        self._drain()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - self._before.ru_utime) + (after.ru_stime - self._before.ru_stime)
        peak = self._peak_rss
        if after.ru_maxrss > self._before.ru_maxrss:  # a child of this interval set a new maximum
            peak = max(peak, after.ru_maxrss * (1 if sys.platform == "darwin" else 1024))
        ended = ended_at is not None or any(p.ended.is_set() for p in self._pumps)
        return Outcome(exit_code, round(duration, 3), round(peak / 2**20, 1), round(max(cpu, 0.0), 3),
                       self._pumps[1].tail(), ended)

    def kill(self) -> None:
        """Ends the script at once if it still runs (the runner is going away)."""
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)
            self.process.wait()

    def _drain(self) -> None:
        """Waits for the pipes' ends; processes the script left holding them are killed after a grace."""
        deadline = time.monotonic() + LEFTOVER_GRACE
        if not all(p.wait_read(max(0.0, deadline - time.monotonic())) for p in self._pumps):
            self.signal(signal.SIGKILL)
            for pump in self._pumps:
                if not pump.wait_read(1.0):
                    pump.abandon()
        for pump in self._pumps:
            pump.wait()

    def _poll_memory(self) -> None:
        try:
            root = psutil.Process(self.process.pid)  # once: its pid is not reused before it is waited for
            while True:
                total = 0
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # a process that just ended
                        total += process.memory_info().rss
                self._peak_rss = max(self._peak_rss, total)
                if self._waited.wait(self._poll_seconds):
                    return
        except psutil.Error:
            pass  # the script has ended


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def note(message: str) -> None:
    print(f"nimbus runner: {message}", file=sys.stderr, flush=True)
