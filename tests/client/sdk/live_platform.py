"""Fixtures serving the real app over HTTP on a free 127.0.0.1 port, in a background thread.

Shared by the SDK and CLI tests: each test gets its own platform home (SQLite + blob folder),
a clean client configuration and a fresh metrics buffer.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from nimbus import metrics_buffer
from nimbus.exceptions import NimbusError
from nimbus.workspace import Workspace

CLIENT_ENV = ("NIMBUS_URL", "NIMBUS_TOKEN", "NIMBUS_WORKSPACE", "NIMBUS_CONFIG", "NIMBUS_HOME")


@dataclass
class Platform:
    url: str
    token: str
    home: Path
    services: object


@pytest.fixture(autouse=True)
def client_env(tmp_path, monkeypatch):
    """No test reads the real profile or credentials of whoever runs the suite."""
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NIMBUS_CONFIG", str(tmp_path / "config" / "profile.json"))
    monkeypatch.setenv("NIMBUS_HOME", str(tmp_path / "no-platform"))


@pytest.fixture(autouse=True)
def metrics(monkeypatch):
    """A fresh process-wide metrics buffer per test, with short retries so nothing lingers."""
    fresh = metrics_buffer.MetricsBuffer(retry_seconds=5)
    monkeypatch.setattr(metrics_buffer, "_buffer", fresh)
    yield fresh
    try:
        fresh.flush(timeout=10)
    except NimbusError:
        pass


@pytest.fixture
def platform(tmp_path):
    from chalicelib.api import service_locator
    from chalicelib.local.platform import build, stop

    home = tmp_path / "platform"
    server, credentials = build(home, "127.0.0.1", 0)
    # A short poll interval lets shutdown() return at once instead of after half a second.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield Platform(credentials["url"], credentials["token"], home, server.services)
    finally:
        server.shutdown()
        server.server_close()
        stop(server.services)
        service_locator.use(None)


@pytest.fixture
def workspace(platform) -> Workspace:
    """The platform's `default` workspace, as its admin."""
    return Workspace("default", platform.url, platform.token)


@pytest.fixture
def user_token(platform):
    """Makes a (non-admin) user and returns their token."""

    def make(name: str) -> str:
        platform.services.identity.create_user(name)
        return platform.services.identity.create_token(name)["token"]

    return make
