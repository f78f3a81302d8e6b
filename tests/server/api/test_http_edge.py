"""The local platform's HTTP edge against malformed and hostile traffic: raw HTTP over a socket to a real
server on 127.0.0.1 (chalicelib/local/server.py, http_framing.py)."""
from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from chalicelib.api import service_locator
from chalicelib.api.routing import MAX_BODY
from chalicelib.local import http_framing, server as server_module
from chalicelib.local.http_framing import MAX_UPLOAD
from chalicelib.local.platform import build, stop


class Served:
    def __init__(self, server, credentials, home):
        self.server, self.token, self.home = server, credentials["token"], home
        self.port = server.server_address[1]

    def connect(self) -> "Connection":
        return Connection(self.port)

    def presigned(self, op: str, key: str) -> str:
        """The request target (path and query) of a presigned URL."""
        blobs = self.server.services.ctx.blobs
        url = blobs.presign_put(key, 300) if op == "put" else blobs.presign_get(key, 300)
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"

    def request_bytes(self, method: str, target: str, body: bytes = b"", headers: dict | None = None) -> bytes:
        fields = {"Host": "127.0.0.1", "Authorization": f"Bearer {self.token}", **(headers or {})}
        if body and "Transfer-Encoding" not in fields:
            fields.setdefault("Content-Length", str(len(body)))
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        return f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode() + body


class Connection:
    """One client connection that reads answers one after another, exactly (no read-ahead is lost)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict, bytes]:
        status_line = self.file.readline()
        assert status_line, "the server closed the connection without answering"
        status = int(status_line.split()[1])
        headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", 0)))
        return status, headers, body

    def closed_by_server(self, within: float) -> bool:
        self.sock.settimeout(within)
        try:
            return self.file.read(1) == b""
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _serve(home):
    server, credentials = build(home, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return Served(server, credentials, home)


def _stop(served: Served) -> None:
    served.server.shutdown()
    served.server.server_close()
    stop(served.server.services)
    service_locator.use(None)


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    served = _serve(tmp_path_factory.mktemp("edge"))
    yield served
    _stop(served)


@pytest.fixture
def strict_edge(tmp_path, monkeypatch):
    """A server with short timeouts, to see them act."""
    monkeypatch.setattr(http_framing, "HEADER_SECONDS", 0.5)
    monkeypatch.setattr(server_module, "IDLE_SECONDS", 1)
    monkeypatch.setattr(server_module, "CLEANUP_SECONDS", 0.2)
    served = _serve(tmp_path / "strict")
    yield served
    _stop(served)


@pytest.fixture
def limited_edge(tmp_path, monkeypatch):
    """A server that takes 3 connections at once."""
    monkeypatch.setattr(server_module, "CONNECTIONS", 3)
    served = _serve(tmp_path / "limited")
    yield served
    _stop(served)


def _error(body: bytes) -> dict:
    return json.loads(body)


def _ask(edge: Served, data: bytes) -> tuple[int, dict, bytes]:
    connection = edge.connect()
    try:
        connection.send(data)
        return connection.answer()
    finally:
        connection.close()


# --- malformed framing: 400 with the API's JSON error, the connection closed -----------------------

@pytest.mark.parametrize("length", ["-5", "abc", "5, 6", "0x10", "+5", ""])
def test_a_content_length_that_is_not_one_number_is_400(edge, length):
    status, headers, body = _ask(edge, edge.request_bytes("POST", "/v1/whoami", headers={"Content-Length": length}))
    assert status == 400 and headers["connection"] == "close"
    assert _error(body) == {"code": "BadRequest", "message": "Content-Length is invalid", "field": "Content-Length"}


def test_two_content_length_headers_are_400(edge):
    request = (b"POST /v1/whoami HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}")
    status, _, body = _ask(edge, request)
    assert status == 400 and _error(body)["field"] == "Content-Length"


def test_content_length_with_transfer_encoding_is_400(edge):
    request = edge.request_bytes("POST", "/v1/workspaces/default/runs", b"0\r\n\r\n",
                                 {"Content-Length": "5", "Transfer-Encoding": "chunked"})
    status, _, body = _ask(edge, request)
    assert status == 400
    assert _error(body)["field"] == "Content-Length" and "Transfer-Encoding" in _error(body)["message"]


def test_transfer_encoding_on_http_1_0_is_400(edge):
    request = b"POST /v1/whoami HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    status, _, body = _ask(edge, request)
    assert status == 400 and _error(body)["field"] == "Transfer-Encoding"


def test_an_unknown_transfer_encoding_is_501(edge):
    request = edge.request_bytes("POST", "/v1/whoami", b"xx", {"Transfer-Encoding": "gzip"})
    status, _, body = _ask(edge, request)
    assert status == 501 and _error(body)["field"] == "Transfer-Encoding"


def test_a_malformed_chunk_is_400(edge):
    request = edge.request_bytes("POST", "/v1/workspaces/default/runs", b"zz\r\n{}\r\n0\r\n\r\n",
                                 {"Transfer-Encoding": "chunked"})
    status, _, body = _ask(edge, request)
    assert status == 400 and _error(body)["field"] == "Transfer-Encoding"


def test_headers_over_64_kib_are_431(edge):
    status, _, body = _ask(edge, edge.request_bytes("GET", "/v1/whoami", headers={"X-Padding": "a" * 70_000}))
    assert status == 431 and _error(body)["code"] == "BadRequest"


# --- chunked bodies are read as bodies, never as the next request ------------------------------------

def _chunked(data: bytes, size: int = 7) -> bytes:
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def test_a_chunked_api_body_is_read_and_the_connection_serves_the_next_request(edge):
    connection = edge.connect()
    try:
        body = json.dumps({"experiment": "chunked", "status": "Running"}).encode()
        connection.send(edge.request_bytes("POST", "/v1/workspaces/default/runs", _chunked(body),
                                           {"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
                        + edge.request_bytes("GET", "/v1/whoami"))
        status, _, created = connection.answer()
        assert status in (200, 201), created
        assert json.loads(created)["experiment"] == "chunked"
        status, _, whoami = connection.answer()  # the chunk bytes were not taken for a second request
        assert status == 200 and json.loads(whoami)["user"] == "admin"
    finally:
        connection.close()


def test_a_request_hidden_in_a_chunked_body_is_not_served(edge):
    hidden = edge.request_bytes("DELETE", "/v1/workspaces/default")
    connection = edge.connect()
    try:
        # The body is `{}` then a chunk that carries a whole request: it is body, never a request.
        body = b"2\r\n{}\r\n" + b"%x\r\n%s\r\n" % (len(hidden), hidden) + b"0\r\n\r\n"
        connection.send(edge.request_bytes("POST", "/v1/workspaces/default/runs", body,
                                           {"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
                        + edge.request_bytes("GET", "/v1/workspaces/default"))
        status, _, answer = connection.answer()
        assert status == 400 and json.loads(answer)["field"] == "body"  # `{}DELETE …` is not JSON
        status, _, workspace = connection.answer()
        assert status == 200 and json.loads(workspace)["name"] == "default"
    finally:
        connection.close()


def test_a_chunked_upload_is_stored_whole(edge):
    data = os.urandom(300_000)
    status, _, _ = _ask(edge, edge.request_bytes("PUT", edge.presigned("put", "edge/chunked.bin"), _chunked(data, 65_536),
                                                 {"Transfer-Encoding": "chunked"}))
    assert status == 200
    status, headers, stored = _ask(edge, edge.request_bytes("GET", edge.presigned("get", "edge/chunked.bin")))
    assert status == 200 and headers["content-length"] == str(len(data)) and stored == data


# --- body limits: 413 answered before the body is read ------------------------------------------------

def test_an_api_body_over_the_limit_is_413_before_it_is_sent(edge):
    connection = edge.connect()
    try:
        connection.send(edge.request_bytes("POST", "/v1/workspaces/default/runs",
                                           headers={"Content-Length": str(10 * 1024 ** 3)}))
        status, headers, body = connection.answer()  # not one byte of the body was sent
        assert status == 413 and headers["connection"] == "close"
        assert _error(body) == {"code": "TooLarge", "message": f"the request body is over {MAX_BODY:,} bytes",
                                "field": "body"}
    finally:
        connection.close()


def test_an_api_body_of_exactly_the_limit_reaches_the_app_and_one_byte_more_does_not(edge):
    document = json.dumps({"experiment": "at-the-limit", "status": "Running"}).encode()
    padded = document + b" " * (MAX_BODY - len(document))  # JSON allows trailing whitespace
    status, _, created = _ask(edge, edge.request_bytes("POST", "/v1/workspaces/default/runs", padded,
                                                       {"Content-Type": "application/json"}))
    assert status in (200, 201) and json.loads(created)["experiment"] == "at-the-limit"
    # One byte more is refused on its headers (sending the body too would race the server's close).
    status, _, body = _ask(edge, edge.request_bytes("POST", "/v1/workspaces/default/runs", headers={
        "Content-Type": "application/json", "Content-Length": str(MAX_BODY + 1)}))
    assert status == 413 and _error(body)["field"] == "body"


def test_a_chunked_api_body_over_the_limit_is_413(edge):
    connection = edge.connect()
    try:
        connection.send(edge.request_bytes("POST", "/v1/workspaces/default/runs", headers={"Transfer-Encoding": "chunked"}))
        piece = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
        try:
            for _ in range(8):
                connection.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        status, _, body = connection.answer()
        assert status == 413 and _error(body)["field"] == "body"
    finally:
        connection.close()


def test_an_upload_without_a_valid_signature_is_refused_before_its_body(edge):
    target = edge.presigned("put", "edge/forged.bin").replace("signature=", "signature=0")
    status, headers, body = _ask(edge, edge.request_bytes("PUT", target, headers={"Content-Length": str(4 * 1024 ** 3)}))
    assert status == 403 and headers["connection"] == "close"
    assert _error(body) == {"code": "Forbidden", "message": "signature mismatch"}
    download_url = edge.presigned("get", "edge/forged.bin")  # a download URL does not allow uploads either
    status, _, body = _ask(edge, edge.request_bytes("PUT", download_url, headers={"Content-Length": "99999999999"}))
    assert status == 403 and "does not allow PUT" in _error(body)["message"]


@pytest.mark.parametrize("length, status", [(str(MAX_UPLOAD + 1), 413), ("12", 403)])
def test_a_refused_body_is_not_asked_for_with_100_continue(edge, length, status):
    target = edge.presigned("put", "edge/expect.bin")
    if status == 403:
        target = target.replace("signature=", "signature=0")
    request = edge.request_bytes("PUT", target, headers={"Content-Length": length, "Expect": "100-continue"})
    assert _ask(edge, request)[0] == status  # the first answer is the refusal, not "100 Continue"
    connection = edge.connect()
    try:  # and an upload that is valid is asked for
        connection.send(edge.request_bytes("PUT", edge.presigned("put", "edge/expect.bin"),
                                           headers={"Content-Length": "12", "Expect": "100-continue"}))
        assert connection.file.readline().startswith(b"HTTP/1.1 100 ")
        assert connection.file.readline() == b"\r\n"
        connection.send(b"twelve bytes")
        assert connection.answer()[0] == 200
    finally:
        connection.close()


def test_an_upload_over_the_upload_limit_is_413_before_its_body(edge):
    status, _, body = _ask(edge, edge.request_bytes("PUT", edge.presigned("put", "edge/huge.bin"),
                                                    headers={"Content-Length": str(MAX_UPLOAD + 1)}))
    assert status == 413 and _error(body)["message"] == f"the request body is over {MAX_UPLOAD:,} bytes"


def test_a_large_upload_streams_in_and_out_on_one_connection(edge):
    data = os.urandom(24 * 1024 * 1024)  # four times the API's limit: uploads have their own
    connection = edge.connect()
    try:
        connection.send(edge.request_bytes("PUT", edge.presigned("put", "edge/model.bin"), data))
        assert connection.answer()[0] == 200
        connection.send(edge.request_bytes("GET", edge.presigned("get", "edge/model.bin")))
        status, headers, stored = connection.answer()
        assert status == 200 and int(headers["content-length"]) == len(data)
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
        assert "connection" not in headers
    finally:
        connection.close()


def test_an_upload_without_a_length_is_411(edge):
    status, _, body = _ask(edge, edge.request_bytes("PUT", edge.presigned("put", "edge/nolength.bin")))
    assert status == 411 and _error(body)["code"] == "LengthRequired"


# --- keep-alive, timeouts, connections ---------------------------------------------------------------

def test_one_connection_serves_many_requests(edge):
    connection = edge.connect()
    try:
        for _ in range(5):
            connection.send(edge.request_bytes("GET", "/v1/whoami"))
            status, headers, body = connection.answer()
            assert status == 200 and "connection" not in headers and json.loads(body)["user"] == "admin"
        connection.send(edge.request_bytes("GET", "/v1/no-such-route"))
        status, _, body = connection.answer()
        assert status == 404 and _error(body)["code"] == "NotFound"
    finally:
        connection.close()


def test_answers_are_not_held_back_by_nagle(edge):
    connection = edge.connect()
    try:
        connection.send(edge.request_bytes("GET", "/v1/whoami"))
        assert connection.answer()[0] == 200
        mine = connection.sock.getsockname()
        accepted = [channel.socket for channel in list(edge.server._map.values())
                    if getattr(channel, "addr", None) == mine]
        assert len(accepted) == 1
        assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        connection.close()


def test_headers_dripped_slowly_are_answered_408(strict_edge):
    connection = strict_edge.connect()
    try:
        request = strict_edge.request_bytes("GET", "/v1/whoami")
        for byte in request[:40]:  # never idle for the idle timeout, yet never done
            if select.select([connection.sock], [], [], 0.05)[0]:
                break  # answered: sending on would race the server's close
            connection.send(bytes([byte]))
        else:
            raise AssertionError("the server waited 2 s for headers dripped a byte at a time")
        status, _, body = connection.answer()
        assert status == 408 and "headers took over" in _error(body)["message"]
    finally:
        connection.close()


def test_an_idle_connection_is_closed_mid_request_and_between_requests(strict_edge):
    silent, stalled, kept = strict_edge.connect(), strict_edge.connect(), strict_edge.connect()
    try:
        stalled.send(strict_edge.request_bytes("PUT", strict_edge.presigned("put", "edge/stalled.bin"),
                                               headers={"Content-Length": "1000"}) + b"only part of it")
        kept.send(strict_edge.request_bytes("GET", "/v1/whoami"))
        assert kept.answer()[0] == 200
        for connection in (silent, stalled, kept):
            assert connection.closed_by_server(within=5)
    finally:
        for connection in (silent, stalled, kept):
            connection.close()


def test_connections_beyond_the_limit_wait_until_one_closes(limited_edge):
    held = [limited_edge.connect() for _ in range(3)]
    waiting = limited_edge.connect()  # the kernel accepts it; the server does not take it up yet
    try:
        for connection in held:
            connection.send(limited_edge.request_bytes("GET", "/v1/whoami"))
            assert connection.answer()[0] == 200
        waiting.send(limited_edge.request_bytes("GET", "/v1/whoami"))
        assert not select.select([waiting.sock], [], [], 1.0)[0], "served beyond the connection limit"
        held.pop().close()
        assert waiting.answer()[0] == 200
    finally:
        for connection in held + [waiting]:
            connection.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads the process's open files from /proc")
def test_a_large_body_waits_in_the_platforms_spool_folder_not_the_systems(edge):
    spool = os.path.realpath(edge.home / "spool")
    connection = edge.connect()
    try:
        data = os.urandom(3 * 1024 * 1024)
        connection.send(edge.request_bytes("PUT", edge.presigned("put", "edge/spooled.bin"), data)[:-1024 * 1024])
        deadline, spooled = time.time() + 5, []
        while not spooled and time.time() < deadline:  # the server runs in this process: its files are ours
            time.sleep(0.05)
            spooled = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                       if _link(f"/proc/self/fd/{fd}").startswith(spool + "/")]
        assert spooled and all(link.endswith("(deleted)") for link in spooled)  # unnamed: nothing outlives a crash
        connection.send(data[-1024 * 1024:])
        assert connection.answer()[0] == 200
    finally:
        connection.close()


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return ""
