"""The local platform as a real process on a free port, for end-to-end tests."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Platform:
    def __init__(self, home: Path, python: str = sys.executable, env: dict[str, str] | None = None):
        self.home, self.port, self.process = home, free_port(), None
        self.python, self.env = python, env

    def start(self) -> "Platform":
        self.process = subprocess.Popen([self.python, "-m", "chalicelib.local", "--home", str(self.home),
                                         "--port", str(self.port)], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                requests.get(f"{self.url}/v1/whoami", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        self.process.kill()
        raise AssertionError(self.process.stdout.read().decode())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + self.credentials()["token"]
        return session

    def credentials(self) -> dict:
        return json.loads((self.home / "credentials").read_text())

    def stop(self, sig=signal.SIGTERM) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=10)


@pytest.fixture
def platform(tmp_path):
    running = Platform(tmp_path / "home").start()
    yield running
    if running.process.poll() is None:
        running.stop(signal.SIGKILL)


@pytest.fixture
def workspace(platform, monkeypatch):
    """The running platform's `default` workspace, found by the SDK as a user's shell would."""
    from nimbus import Workspace

    monkeypatch.setenv("NIMBUS_URL", platform.url)
    monkeypatch.setenv("NIMBUS_TOKEN", platform.credentials()["token"])
    return Workspace.get("default")
