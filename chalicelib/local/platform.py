"""`nimbus up`: the local platform on the embedded backend (SQLite + files under $NIMBUS_HOME).

The first start creates the admin, writes its token to $NIMBUS_HOME/credentials (mode 0600) and
creates the workspace `default`. Every start rewrites the URL in that file so clients find the server.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

from chalicelib.errors import Conflict
from chalicelib.local.heap import Heap
from chalicelib.settings import Settings
from chalicelib.wiring import build_services
from nimbus.runtime.private_files import write_private

CREDENTIALS = "credentials"
SPOOL = "spool"  # request bodies on their way in (unnamed files: the folder looks empty)


def bootstrap(services, home: Path, url: str) -> dict:
    """Admin, credentials and the default workspace, created once; the URL refreshed every start."""
    identity, path = services.identity, home / CREDENTIALS
    token = identity.bootstrap_admin("admin")
    if token is None:
        existing = json.loads(path.read_text()) if path.exists() else {}
        token = existing.get("token")
        if not token:  # the file was lost: the old token stays unknown, so mint a new one
            token = identity.create_token("admin", name="recovered")["token"]
    principal = identity.authenticate(f"Bearer {token}")
    try:
        services.workspaces.create(principal, "default", "created by the first start of the local platform")
    except Conflict:
        pass  # already there: later starts keep it as it is
    credentials = {"url": url, "token": token, "user": "admin"}
    write_private(path, credentials)
    return credentials


def build(home: Path, host: str = "127.0.0.1", port: int = 8000):
    """Bind the port, then build services whose presigned URLs point at it. Returns (server, credentials)."""
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # EMF lines are for CloudWatch only
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Here, not at the top: the app's logger and metrics read the two variables above when they load.
    from chalicelib.local.server import LocalServer

    home = Path(home).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    server = LocalServer(host, port, spool=home / SPOOL)
    # The operator's settings (NIMBUS_DATASTORE_ROOTS, NIMBUS_PRESIGN_SECONDS …), on this home and this URL.
    settings = dataclasses.replace(Settings.from_env({**os.environ, "NIMBUS_BACKEND": "local"}), home=home,
                                   public_url=server.url)
    services = build_services(settings, local_workers=True)
    server.use(services)
    # Writes a kill interrupted: never published, never listed; in the datastore roots too.
    for store in (services.ctx.blobs, *server.stores.roots.values()):
        store.remove_abandoned_temporaries()
    credentials = bootstrap(services, home, server.url)
    services.dispatcher.get("local").start()  # instance targets' agents, elsewhere, pull from their queues
    services.host.start()
    return server, credentials


def stop(services) -> None:
    """Stop launching work: running jobs are adopted by the next start; scoring hosts are restarted by it."""
    if services.dispatcher is not None:
        services.dispatcher.stop()
    if services.host is not None:
        services.host.stop()


def _interrupt(*_):
    raise KeyboardInterrupt  # serve_forever runs in this thread: unwind it like Ctrl-C


def serve(home: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    heap = Heap()
    heap.limit_arenas()  # before build() starts the platform's threads
    server, credentials = build(home, host, port)
    heap.start_trimming()
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Nimbus is running at {server.url}  (workspace 'default'; admin token in {Path(home) / CREDENTIALS})",
          flush=True)
    # How runs are kept from this home (nimbus/runtime/run_isolation.py): a warning when they are not
    print(server.services.dispatcher.get("local").worker.isolation.notice, file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        heap.stop()
        server.server_close()
        stop(server.services)
