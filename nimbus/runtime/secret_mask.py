"""Secret values kept out of a run's logs: every value the run read is replaced by `***` in its output
before the runner sends (or echoes) it.

Output arrives in chunks of any size, so a value may be split between two of them: a stream holds back
the end of what it was given while that end could still begin a value, and lets it go once the next
text (or the end of the stream) settles it. What a stream lets out is exactly what masking the whole
output at once would give.

A script's own reads (Run.get_secret) reach the runner through a local socket (MaskServer) before the
value is handed to the script, so whatever the script prints afterwards is masked.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path

MASK = "***"
SOCKET_ENV = "NIMBUS_SECRET_MASK_SOCKET"
MAX_VALUE_CHARS = 65536  # the service's ceiling for a secret
MIN_LINE = 4  # shorter lines of a multi-line value are left alone: they would mask common text
_ACK = b"ok"


class SecretMask:
    """The values to mask, shared by every stream of a run (thread-safe)."""

    def __init__(self, values: list[str] | None = None):
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        self._pattern: re.Pattern | None = None
        for value in values or []:
            self.add(value)

    def add(self, value: str) -> None:
        """Masks `value`, and each line of a value of several lines (a key printed line by line) of at least
        MIN_LINE characters."""
        lines = [line.strip("\r") for line in value.split("\n")] if "\n" in value else []
        new = {value, *(line for line in lines if len(line) >= MIN_LINE)} - {""}
        with self._lock:
            if new <= set(self._values):
                return
            # Longest first: where two values start at one place, the longer is masked whole.
            self._values = tuple(sorted(set(self._values) | new, key=len, reverse=True))
            self._pattern = re.compile("|".join(re.escape(v) for v in self._values))

    def snapshot(self) -> tuple[tuple[str, ...], re.Pattern | None]:
        with self._lock:
            return self._values, self._pattern

    def stream(self) -> "MaskedStream":
        return MaskedStream(self)

    def __bool__(self) -> bool:
        return bool(self._values)


class MaskedStream:
    """One output stream's masking: feed() what was read, in order; end() when the stream is over."""

    def __init__(self, mask: SecretMask):
        self._mask = mask
        self._held = ""

    def feed(self, text: str) -> str:
        values, pattern = self._mask.snapshot()
        buffer = self._held + text
        if pattern is None:
            self._held = ""
            return buffer
        out, position = [], 0
        hold = _open_prefix(buffer, values, 0)
        while True:
            match = pattern.search(buffer, position)
            if match is None or match.start() >= hold:  # a match from `hold` on may grow with more text
                break
            out += [buffer[position:match.start()], MASK]
            position = match.end()
            if position > hold:  # the match ran into what looked like a beginning: look again after it
                hold = _open_prefix(buffer, values, position)
        out.append(buffer[position:hold])
        self._held = buffer[hold:]
        return "".join(out)

    def end(self) -> str:
        values, pattern = self._mask.snapshot()
        held, self._held = self._held, ""
        return held if pattern is None else pattern.sub(MASK, held)


def _open_prefix(text: str, values: tuple[str, ...], begin: int) -> int:
    """Where the longest end of `text` (from `begin` on) that is the beginning, not the whole, of some value
    starts; len(text) when no end is."""
    earliest = len(text)
    for value in values:
        start = max(begin, len(text) - len(value) + 1)
        while (start := text.find(value[0], start, earliest)) != -1:
            if value.startswith(text[start:]):
                earliest = start
                break
            start += 1
    return earliest


class MaskServer:
    """A socket, private to this user, on which a script's SDK hands the runner each value it read; the
    runner adds it to the mask and answers, and only then does the SDK return the value."""

    def __init__(self, mask: SecretMask, owner: int | None = None):
        """`owner`: the uid the script runs under when it is not the runner's (nimbus/runtime/run_isolation.py)."""
        self.mask = mask
        self._folder = Path(tempfile.mkdtemp(prefix="nimbus-mask-"))  # 0700; short, as socket paths must be
        self.path = str(self._folder / "mask.sock")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind(self.path)
        os.chmod(self.path, 0o600)
        if owner is not None:  # only the script's own uid may connect, as only the runner's could before
            os.chown(self._folder, owner, owner)
            os.chown(self.path, owner, owner)
        self._socket.listen(16)
        self._thread = threading.Thread(target=self._serve, name="nimbus-secret-mask", daemon=True)
        self._closed = threading.Event()

    def start(self) -> "MaskServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._take, args=(connection,), daemon=True).start()

    def _take(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(10)
            try:
                data = _read_frame(connection)
            except (OSError, ValueError):
                return
            self.mask.add(data.decode("utf-8", "replace"))
            try:
                connection.sendall(_ACK)
            except OSError:
                pass


def register_with_runner(value: str, path: str, timeout: float = 10.0) -> None:
    """Hands `value` to the runner's MaskServer at `path` and waits until it is masked; OSError if not."""
    data = value.encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(path)
        connection.sendall(len(data).to_bytes(4, "big") + data)
        if connection.recv(len(_ACK)) != _ACK:
            raise OSError("the runner did not confirm the secret is masked")


def _read_frame(connection: socket.socket) -> bytes:
    size = int.from_bytes(_read_exactly(connection, 4), "big")
    if size > 4 * MAX_VALUE_CHARS:
        raise ValueError("too large to be a secret")
    return _read_exactly(connection, size)


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = connection.recv(min(left, 65536))
        if not part:
            raise ValueError("the connection ended early")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
