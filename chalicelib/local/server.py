"""The local platform's HTTP/1.1 server: waitress, framing requests as http_framing.py describes, in
front of the platform's WSGI application (platform_app.py).

waitress reads requests and writes answers on one I/O thread and runs the application on a fixed pool
of worker threads. The limits below are what a client meets at the edge (docs/operations.md lists them).
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from waitress import wasyncore
from waitress.server import create_server

from chalicelib.api import service_locator
from chalicelib.local.http_framing import channel_class
from chalicelib.local.platform_app import PlatformApp
from chalicelib.services.container import Services
from chalicelib.store.blob_server import BlobStores, upload_refusal

WORKERS = 8  # requests handled at once; more wait in line (SQLite takes one writer at a time anyway)
CONNECTIONS = 200  # open client connections; beyond them new ones wait in the listen backlog
IDLE_SECONDS = 60  # a connection silent this long (between requests, or mid-request) is closed
CLEANUP_SECONDS = 5  # how often idle connections are looked for


def edge_settings() -> dict:
    """waitress's adjustments for the limits above."""
    return dict(
        threads=WORKERS,
        connection_limit=CONNECTIONS + 2,  # waitress counts its listening socket and its wake-up pipe too
        channel_timeout=IDLE_SECONDS,
        cleanup_interval=CLEANUP_SECONDS,
        max_request_header_size=64 * 1024,  # request line and headers: beyond it, 431
        recv_bytes=256 * 1024,  # large reads: uploads are not read 8 KiB at a time
        inbuf_overflow=1024 * 1024,  # a body over 1 MiB waits for its worker in a temporary file, not in memory
        backlog=1024,
        ident="nimbus",  # the Server header
        expose_tracebacks=False,
        asyncore_use_poll=True,  # no select() limit on descriptors
    )  # waitress's default socket options keep TCP_NODELAY: headers and body never wait for a delayed ACK


class LocalServer:
    """Binds at once (port 0 becomes a real port); serves once `use` has given it the services. Bodies
    too large to wait in memory wait in `spool` (default: the system's temporary folder)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, spool: Path | None = None):
        if spool is not None:
            Path(spool).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.services: Services | None = None
        self.stores: BlobStores | None = None
        self._map: dict = {}
        self._server = create_server(PlatformApp(lambda: self.stores), map=self._map,
                                     host=host, port=port, **edge_settings())
        self._server.channel_class = channel_class(self._upload_refusal, os.fspath(spool or tempfile.gettempdir()))
        self._stop = threading.Event()
        self._serving = threading.Lock()

    def use(self, services: Services) -> None:
        """Serve these services (built once the URL, which presigned URLs embed, is known)."""
        self.services = services
        settings = services.ctx.settings
        self.stores = BlobStores(services.ctx.blobs, settings.datastore_roots, settings.public_url,
                                 settings.home / "signing.key")
        service_locator.use(services)

    @property
    def server_address(self) -> tuple[str, int]:
        return self._server.effective_host, self._server.effective_port

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serves until shutdown() (from another thread) or an exception in this one (Ctrl-C, SIGTERM)."""
        with self._serving:
            while not self._stop.is_set():
                wasyncore.loop(timeout=poll_interval, map=self._map, use_poll=True, count=1)

    def shutdown(self) -> None:
        """Stops serve_forever and waits until it has returned."""
        self._stop.set()
        self._server.pull_trigger()  # wakes the loop at once
        with self._serving:
            pass

    def server_close(self) -> None:
        """Closes every connection and the listening socket, and stops the worker threads."""
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        wasyncore.close_all(self._map)

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="nimbus-http", daemon=True)
        thread.start()
        return thread

    def _upload_refusal(self, path: str, query: dict):
        return upload_refusal(self.stores, path, query)
