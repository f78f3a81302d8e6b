"""The local scoring host: one process serving one deployment revision on 127.0.0.1.

    python -m chalicelib.scoring.host --dir DIR --port N        (N = 0: any free port)

DIR (written by the supervisor, chalicelib/hosting/local_hosts.py):
    host.json    {"workspace", "endpoint", "deployment", "revision", "entry_script", "timeout_s",
                  "capture_rate", "capture_prefix", "keys_file"}
    source/      the entry script and its folder (the working directory of the process)
    models/      NIMBUS_MODEL_DIR: models.json and <name>/<version>/<files>

The host binds, loads the entry script (init() once), then atomically writes DIR/ready.json
{"pid", "port", "cold_start_s"}; when loading fails it writes DIR/failed.json {"error"} and exits 3.
It serves GET /health and POST /score (Bearer key whose sha256 is listed in keys_file). After a
run() timeout it answers 504 and exits 4 so the supervisor starts a clean process; SIGTERM flushes
telemetry and exits 0. Telemetry goes to the table every ~1 s through the Table port, which is
imported on first flush only: the cold start is the interpreter, this module and the model's imports.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import socketserver
import sys
import threading
import time
import traceback
from http.server import ThreadingHTTPServer
from pathlib import Path

from chalicelib.scoring.capture import Capture
from chalicelib.scoring.runtime import (
    JSON, MAX_BODY, ScoreAnswer, ScoringInitError, ScoringRuntime, error_answer, payload_too_large,
)
from chalicelib.scoring.telemetry_recorder import TelemetryRecorder

_IMPORTED = time.monotonic()
EXIT_INIT_FAILED = 3
EXIT_RECYCLE = 4  # not a crash: a run() overran and this sandbox must be replaced
FLUSH_INTERVAL_S = 1.0  # how stale `nimbus endpoint show` may be: requests appear within about a second
DRAIN_S = 2.0  # at exit, how long requests in flight get to finish before the last flush
MAX_LINE = 65536  # request line or header field, in bytes
MAX_HEADERS = 100
DISCARD_LIMIT = 64 * 1024 * 1024  # beyond this an unwanted body is not read: the connection closes
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 411: "Length Required",
            413: "Payload Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout"}


def process_age_s() -> float:
    """Seconds since this process started (from /proc, 10 ms resolution): the cold start includes the
    interpreter's own start, not only our code."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # no /proc: from this module's import
        return time.monotonic() - _IMPORTED


def installed_modules() -> list[str]:
    """The installed packages' modules this process imported (the entry script's own and ours aside)."""
    names = []
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None) or ""
        if ("site-packages" in where or "dist-packages" in where) and not name.startswith(("chalicelib", "nimbus")):
            names.append(name)
    return sorted(names)


def write_atomic(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data))
    os.replace(temp, path)


class KeyRing:
    """The endpoint's key digests, re-read whenever keys_file changes (key regeneration needs no restart)."""

    def __init__(self, path: str | None):
        self.path = path
        self._stamp: tuple | None = None
        self._digests: tuple[bytes, ...] = ()
        self._lock = threading.Lock()

    def allows(self, authorization: str | None) -> bool:
        if not authorization or authorization[:7].lower() != "bearer ":
            return False
        digest = hashlib.sha256(authorization[7:].strip().encode()).hexdigest().encode()
        allowed = False
        for known in self._current():  # no early exit: every digest is compared, in constant time
            allowed |= hmac.compare_digest(digest, known)
        return allowed

    def _current(self) -> tuple[bytes, ...]:
        if not self.path:
            return ()
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            return ()
        if stamp != self._stamp:
            with self._lock:
                try:
                    with open(self.path, "rb") as handle:
                        hashes = json.loads(handle.read()).get("hashes") or []
                    self._digests = tuple(str(h).lower().encode() for h in hashes)
                    self._stamp = stamp
                except (OSError, ValueError, AttributeError):
                    pass  # half-written: keep the previous keys and read it again next time
        return self._digests


class TelemetryFlusher:
    """Writes recorded telemetry through the Table port, built (and imported) on first use."""

    def __init__(self, recorder: TelemetryRecorder):
        self.recorder = recorder
        self._table = None
        self._last_error: str | None = None

    def flush(self) -> None:
        if not self.recorder.pending:
            return
        try:
            if self._table is None:
                from chalicelib.settings import Settings  # here: not part of the cold start
                from chalicelib.store.factory import build_table

                self._table = build_table(Settings.from_env())
            self.recorder.flush(self._table)
            self._last_error = None
        except Exception as err:  # noqa: BLE001 - telemetry waits for the next flush, serving goes on
            message = f"{type(err).__name__}: {err}"
            if message != self._last_error:
                print(f"telemetry flush failed (will retry): {message}", file=sys.stderr, flush=True)
            self._last_error = message


class ScoringHost:
    """Everything the request handlers share."""

    def __init__(self, folder: Path, config: dict):
        self.folder = folder
        self.config = config
        self.deployment = str(config["deployment"])
        self.revision = config.get("revision")
        self.runtime = ScoringRuntime(folder / "source", config["entry_script"], folder / "models",
                                      float(config.get("timeout_s") or 60))
        keys_file = config.get("keys_file")
        self.keys = KeyRing(str(folder / keys_file) if keys_file else None)  # relative: to DIR
        self.telemetry = TelemetryRecorder(str(config["workspace"]), str(config["endpoint"]))
        self.capture = Capture(self.deployment, config.get("capture_prefix") or "", config.get("capture_rate") or 0)
        self.exit_code: int | None = None
        self.active = 0  # requests being answered
        self._active_lock = threading.Lock()
        self.deployment_header = f"X-Nimbus-Deployment: {self.deployment}\r\n"
        self.health = json.dumps({"status": "Healthy", "deployment": self.deployment,
                                  "revision": self.revision}).encode()

    def request_exit(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code

    def enter(self) -> None:
        with self._active_lock:
            self.active += 1

    def leave(self) -> None:
        with self._active_lock:
            self.active -= 1


class _Request:
    __slots__ = ("method", "path", "headers", "keep_alive")

    def __init__(self, method: str, path: str, headers: dict[bytes, bytes], keep_alive: bool):
        self.method, self.path, self.headers, self.keep_alive = method, path, headers, keep_alive

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Connection(socketserver.StreamRequestHandler):
    """One keep-alive connection. A lean HTTP/1.1 reader: the stdlib's BaseHTTPRequestHandler parses
    headers with the email package, which cost more CPU per request than everything else here."""

    disable_nagle_algorithm = True
    server: "ScoringServer"

    def handle(self) -> None:
        self.close_connection = False
        try:
            while not self.close_connection:
                try:
                    request = self._read_request()
                except _BadRequest as err:
                    self.close_connection = True
                    self._answer(error_answer(err.status, "BadRequest", str(err)))
                    return
                if request is None:
                    return
                self.close_connection = not request.keep_alive
                self._dispatch(request)
        except (ConnectionError, TimeoutError):
            return  # the client went away

    def _read_request(self) -> _Request | None:
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_LINE:
            raise _BadRequest(414, "request line too long")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        headers: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADERS):
            field = self.rfile.readline(MAX_LINE + 1)
            if field in (b"\r\n", b"\n"):
                break
            if not field:
                return None
            name, colon, value = field.partition(b":")
            if not colon or len(field) > MAX_LINE:
                raise _BadRequest(400, "malformed header")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _BadRequest(431, "too many headers")
        connection = headers.get(b"connection", b"").lower()
        keep_alive = b"close" not in connection if parts[2] == b"HTTP/1.1" else b"keep-alive" in connection
        path = parts[1].decode("latin-1").split("?", 1)[0]
        return _Request(parts[0].decode("latin-1"), path, headers, keep_alive)

    def _dispatch(self, request: _Request) -> None:
        if request.method == "GET" and request.path == "/health":
            self._send(200, self.server.host.health)
        elif request.method == "POST" and request.path == "/score":
            host = self.server.host
            host.enter()
            try:
                self._score(host, request)
            finally:
                host.leave()
        else:
            length = self._content_length(request)
            if length is None:
                return
            self._discard(request, length)
            self._answer(error_answer(404, "NotFound", f"no route {request.method} {request.path}; "
                                                       "this host serves GET /health and POST /score"))

    def _score(self, host: ScoringHost, request: _Request) -> None:
        started = time.perf_counter()
        length = self._content_length(request)
        if length is None:
            return
        if not host.keys.allows(request.header(b"authorization")):
            self._discard(request, length)
            self._answer(error_answer(401, "Unauthorized", "a valid endpoint key is required: "
                                                           "Authorization: Bearer <key>"))
            return
        if length > MAX_BODY:
            body = b""
            self._discard(request, length)
            answer = payload_too_large(length)
        else:
            body = self._read_body(request, length)
            if body is None:
                return
            answer = host.runtime.score(body, request.header(b"content-type"))
        self._answer(answer)
        host.telemetry.record(host.deployment, answer.status, (time.perf_counter() - started) * 1000.0)
        if host.capture.enabled:
            host.capture.offer(answer.status, body, answer.body)
        if answer.recycle:
            print(f"run() exceeded its {host.runtime.timeout_s:g} s timeout: restarting the scoring host",
                  file=sys.stderr, flush=True)
            host.request_exit(EXIT_RECYCLE)

    def _content_length(self, request: _Request) -> int | None:
        if b"chunked" in request.headers.get(b"transfer-encoding", b"").lower():
            self.close_connection = True
            self._answer(error_answer(411, "LengthRequired", "send the body with a Content-Length"))
            return None
        try:
            length = int(request.headers.get(b"content-length") or 0)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._answer(error_answer(400, "Invalid", "Content-Length is not a number", field="Content-Length"))
            return None
        return length

    def _read_body(self, request: _Request, length: int) -> bytes | None:
        if not length:
            return b""
        if request.headers.get(b"expect", b"").lower() == b"100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _discard(self, request: _Request, length: int) -> None:
        """Read and drop a body we will not use, so the connection stays usable; past DISCARD_LIMIT the
        connection closes instead (a client waiting on 100-continue never sends it)."""
        expecting = request.headers.get(b"expect", b"").lower() == b"100-continue"
        if length > DISCARD_LIMIT or (expecting and length):
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _answer(self, answer: ScoreAnswer) -> None:
        self._send(answer.status, answer.body, answer.content_type)

    def _send(self, status: int, body: bytes, content_type: str = JSON) -> None:
        """Status line, headers and body in one write: one packet for small answers."""
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nServer: nimbus-scoring\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{self.server.host.deployment_header}")
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)


class ScoringServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections never hold the process up
    block_on_close = False
    request_queue_size = 128

    def __init__(self, port: int, host: ScoringHost):
        self.host = host
        super().__init__(("127.0.0.1", port), _Connection)


def _fail(folder: Path, message: str, traceback_text: str = "") -> int:
    if traceback_text:
        sys.stderr.write(traceback_text)
    print(f"deployment failed to start: {message}", file=sys.stderr, flush=True)
    write_atomic(folder / "failed.json", {"error": message})
    return EXIT_INIT_FAILED


def run_host(folder: Path, port: int) -> int:
    try:
        config = json.loads((folder / "host.json").read_text())
        host = ScoringHost(folder, config)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return _fail(folder, f"cannot read {folder / 'host.json'}: {type(err).__name__}: {err}")
    server = ScoringServer(port, host)  # bound before loading: the port is ours while init() runs
    os.chdir(host.runtime.source_dir)  # entry scripts may open files relative to their folder
    try:
        host.runtime.load()
    except ScoringInitError as err:
        server.server_close()
        return _fail(folder, err.message, err.traceback)
    cold_start = round(process_age_s(), 3)
    port = server.server_address[1]
    signal.signal(signal.SIGTERM, lambda *_: host.request_exit(0))
    signal.signal(signal.SIGINT, lambda *_: host.request_exit(0))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="nimbus-http",
                     daemon=True).start()
    write_atomic(folder / "ready.json", {"pid": os.getpid(), "port": port, "cold_start_s": cold_start})
    write_atomic(folder / "modules.json", {"modules": installed_modules()})  # what a zygote may preload
    print(f"scoring {config['workspace']}/{config['endpoint']}/{host.deployment} revision {host.revision} "
          f"on 127.0.0.1:{port} (cold start {cold_start:.2f} s)", file=sys.stderr, flush=True)

    flusher = TelemetryFlusher(host.telemetry)
    next_flush = time.monotonic() + FLUSH_INTERVAL_S
    while host.exit_code is None:  # the main thread: signals, periodic flushes
        time.sleep(0.05)
        if time.monotonic() >= next_flush:
            flusher.flush()
            next_flush = time.monotonic() + FLUSH_INTERVAL_S
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + DRAIN_S
    while host.active and time.monotonic() < deadline:
        time.sleep(0.01)
    flusher.flush()
    host.capture.drain()
    return host.exit_code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.scoring.host", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True, help="the deployment folder holding host.json, source/, models/")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    try:
        code = run_host(Path(args.dir).resolve(), args.port)
    except Exception:  # noqa: BLE001 - the supervisor keeps stderr as the deployment's logs
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a run() stuck past its timeout must not keep the process alive


if __name__ == "__main__":
    main()
