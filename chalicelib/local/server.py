"""A threaded HTTP/1.1 server for the local platform.

API requests go through chalice's LocalGateway (the same event shape API Gateway sends, so the app
runs unchanged); `/blobs/…` requests are the local blob store's presigned URLs, streamed to and from
disk without passing through the app.
"""
from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from chalice.config import Config
from chalice.local import LocalGateway, LocalGatewayException

from chalicelib.api import service_locator
from chalicelib.api.app import app
from chalicelib.services.container import Services
from chalicelib.errors import NotFound
from chalicelib.store.blob_server import serve_blob

MAX_REQUEST = 6 * 1024 * 1024 + 1  # the app answers 413 beyond its limit; we stop reading here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: SDK clients reuse one connection
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms ACK stalls
    server: "LocalServer"

    def log_message(self, format, *args):  # noqa: A002 - the access log stays quiet
        return

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if split.path.startswith("/blobs/"):
            query = dict(parse_qsl(split.query))
            status, headers, body = serve_blob(self.server.services.ctx.blobs, self.command, split.path, query,
                                               dict(self.headers), self.rfile, length if "Content-Length" in self.headers else None)
            self._reply(status, headers, body)
            return
        body = self.rfile.read(min(length, MAX_REQUEST)) if length else None
        if length > MAX_REQUEST:
            self.close_connection = True
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            response = self.server.gateway.handle_request(self.command, self.path, headers, body)
        except LocalGatewayException:  # chalice reports an unknown route as API Gateway would (403)
            missing = NotFound(f"no route {self.command} {split.path}")
            self._reply(missing.status, {"Content-Type": "application/json"}, json.dumps(missing.to_dict()).encode())
            return
        payload = response.get("body") or b""
        if isinstance(payload, str):
            payload = payload.encode()
        self._reply(response["statusCode"], {**response.get("headers", {}), **{
            k: ", ".join(v) for k, v in (response.get("multiValueHeaders") or {}).items()}}, payload)

    def _reply(self, status: int, headers: dict, body) -> None:
        """`body` is bytes, an iterable of bytes or a file; non-bytes bodies carry their Content-Length."""
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "connection" and not (isinstance(body, bytes) and name.lower() == "content-length"):
                self.send_header(name, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if isinstance(body, bytes):
                self.wfile.write(body)
            elif hasattr(body, "read"):
                shutil.copyfileobj(body, self.wfile, 1 << 20)
            else:
                for chunk in body:
                    self.wfile.write(chunk)
        finally:
            if hasattr(body, "close"):
                body.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str = "127.0.0.1", port: int = 8000):
        super().__init__((host, port), _Handler)  # binds now: port 0 becomes a real port
        self.gateway = LocalGateway(app, Config.create())
        self.services: Services | None = None

    def use(self, services: Services) -> None:
        """Serve these services (built once the URL, which presigned URLs embed, is known)."""
        self.services = services
        service_locator.use(services)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="nimbus-http", daemon=True)
        thread.start()
        return thread
