"""`nimbus up`: the local platform on the embedded backend (SQLite + files under $NIMBUS_HOME).

The first start creates the admin, writes its token to $NIMBUS_HOME/credentials (mode 0600) and
creates the workspace `default`. Every start rewrites the URL in that file so clients find the server.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from chalicelib.errors import Conflict
from nimbus.runtime.private_files import write_private

CREDENTIALS = "credentials"


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
    from chalicelib.api.deps import Services
    from chalicelib.compute.instance_queue import InstanceQueue
    from chalicelib.compute.router import ComputeRouter
    from chalicelib.hosting.local_hosts import LocalHosts
    from chalicelib.local.compute import LocalCompute
    from chalicelib.local.server import LocalServer
    from chalicelib.settings import Settings

    home = Path(home).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    server = LocalServer(host, port)
    services = Services.from_settings(Settings(backend="local", home=home, public_url=server.url))
    server.use(services)
    credentials = bootstrap(services, home, server.url)
    compute = LocalCompute(services, home / "jobs", server.url)
    # Instance targets: agents on other machines (or this one) pull their runs from the queue.
    services.dispatcher = ComputeRouter({"local": compute, "instance": InstanceQueue(services.ctx)})
    compute.start()
    hosts = LocalHosts(home, services.ctx.blobs, services.ctx.table,
                       on_state=lambda *report: services.deployments.record_state(*report))
    services.host = hosts
    hosts.start()
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
    server, credentials = build(home, host, port)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Nimbus is running at {server.url}  (workspace 'default'; admin token in {Path(home) / CREDENTIALS})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        stop(server.services)
