"""The local scoring host as the supervisor runs it: a real process on a prepared deployment folder."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chalicelib.domain.context import Context
from chalicelib.services.endpoint_telemetry import EndpointTelemetry
from chalicelib.settings import Settings
from chalicelib.store.factory import build_blobs, build_table
from tests.server.unit.scoring_helpers import SETOSA, VIRGINICA, write_model_dir, write_source

REPO = Path(__file__).resolve().parents[3]
KEY, NEW_KEY = "nmbk_first", "nmbk_second"


def write_keys(path: Path, *keys: str) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps({"hashes": [hashlib.sha256(k.encode()).hexdigest() for k in keys]}))
    os.replace(temp, path)


def prepare(folder: Path, entry_script: str | None = None, timeout_s: float = 60, capture_rate: float = 0.0) -> Path:
    write_source(folder / "source", *([entry_script] if entry_script else []))
    write_model_dir(folder / "models")
    write_keys(folder / "keys.json", KEY)
    (folder / "host.json").write_text(json.dumps({
        "workspace": "ws", "endpoint": "ep", "deployment": "blue", "revision": 7, "entry_script": "score.py",
        "timeout_s": timeout_s, "capture_rate": capture_rate, "capture_prefix": "ws/captures/ep/blue/",
        "keys_file": str(folder / "keys.json")}))
    return folder


def start(folder: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "NIMBUS_BACKEND": "local", "NIMBUS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "chalicelib.scoring.host", "--dir", str(folder), "--port", "0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if process.poll() is not None and not path.exists():
            break
        time.sleep(0.02)
    output = process.stdout.read().decode() if process.poll() is not None else "(still running)"
    raise AssertionError(f"{path.name} did not appear; output:\n{output}")


def post(connection, body: dict, key: str | None = KEY) -> tuple[int, object, http.client.HTTPResponse]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    connection.request("POST", "/score", json.dumps(body).encode(), headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read()), response


def summary(home: Path) -> dict:
    settings = Settings(backend="local", home=home)
    return EndpointTelemetry(Context(build_table(settings), build_blobs(settings), settings)).summary("ws", "ep", 60)


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_scores_authenticates_records_and_recycles_after_a_timeout(tmp_path, processes):
    folder, home = prepare(tmp_path / "r7", timeout_s=1, capture_rate=1.0), tmp_path / "home"
    process = start(folder, home)
    processes.append(process)
    ready = wait_for(folder / "ready.json", process)
    assert ready["pid"] == process.pid and ready["port"] > 0 and 0 < ready["cold_start_s"] < 30
    connection = http.client.HTTPConnection("127.0.0.1", ready["port"], timeout=10)

    connection.request("GET", "/health")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {
        "status": "Healthy", "deployment": "blue", "revision": 7}

    # Given no key or a wrong one: 401, on the same keep-alive connection.
    assert post(connection, {"data": [SETOSA]}, key=None)[:2] == (
        401, {"code": "Unauthorized", "message": "a valid endpoint key is required: Authorization: Bearer <key>"})
    assert post(connection, {"data": [SETOSA]}, key="nmbk_wrong")[0] == 401

    status, body, response = post(connection, {"data": [SETOSA, VIRGINICA]})
    assert (status, body) == (200, [0, 2]) and response.getheader("X-Nimbus-Deployment") == "blue"

    # A regenerated key works at once, the old one no longer.
    write_keys(folder / "keys.json", NEW_KEY)
    assert post(connection, {"data": [SETOSA]}, key=NEW_KEY)[:2] == (200, [0])
    assert post(connection, {"data": [SETOSA]}, key=KEY)[0] == 401

    assert post(connection, {"action": "fail"}, key=NEW_KEY)[:2] == (
        500, {"code": "ScoringError", "message": "ValueError: no such flower"})

    # When run() overruns: 504, then the process exits 4 for the supervisor to start a clean one.
    status, body, _ = post(connection, {"action": "sleep", "seconds": 30}, key=NEW_KEY)
    assert status == 504 and body["code"] == "ScoringTimeout"
    assert process.wait(10) == 4
    output = process.stdout.read().decode()
    assert "ValueError: no such flower" in output and "Traceback" in output  # the deployment's logs

    # Telemetry was flushed on the way out: 401s are not requests; the 500 and the 504 are errors.
    counts = summary(home)
    assert counts["requests"] == 4 and counts["errors"] == 2 and counts["deployments"]["blue"]["requests"] == 4
    captured = list((home / "blobs" / "ws" / "captures" / "ep" / "blue").glob("*/*.json"))
    assert len(captured) == 4
    statuses = sorted(json.loads(path.read_text())["status"] for path in captured)
    assert statuses == [200, 200, 500, 504]


def test_init_failure_writes_failed_json_and_exits_3(tmp_path, processes):
    script = "import json\n\ndef init():\n    json.loads('[')\n\ndef run(raw_data):\n    pass\n"
    folder = prepare(tmp_path / "r1", script)
    process = start(folder, tmp_path / "home")
    processes.append(process)
    assert process.wait(30) == 3
    failed = json.loads((folder / "failed.json").read_text())
    assert failed["error"].startswith("JSONDecodeError: Expecting value")
    assert failed["error"].endswith("(in init(), at score.py line 4)")
    assert not (folder / "ready.json").exists()
    assert "Traceback" in process.stdout.read().decode()


def serving(tmp_path, processes, entry_script: str) -> tuple[Path, subprocess.Popen, http.client.HTTPConnection]:
    """(its home, the process, a connection to it) of a host of `entry_script`, once it is ready."""
    folder = prepare(tmp_path / "r1", entry_script)
    home = tmp_path / "home"
    process = start(folder, home)
    processes.append(process)
    ready = wait_for(folder / "ready.json", process)
    return home, process, http.client.HTTPConnection("127.0.0.1", ready["port"], timeout=10)


def test_sigterm_flushes_telemetry_and_exits_0(tmp_path, processes):
    script = "def run(raw_data):\n    return {'length': len(raw_data)}\n"
    home, process, connection = serving(tmp_path, processes, script)
    for _ in range(3):
        assert post(connection, {"x": 1})[:2] == (200, {"length": 8})
    connection.request("POST", "/other", b"{}")
    assert connection.getresponse().status == 404
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert summary(home)["requests"] == 3


def test_a_request_shows_in_the_telemetry_within_about_a_second_while_the_host_runs(tmp_path, processes):
    home, process, connection = serving(tmp_path, processes, "def run(raw_data):\n    return 'ok'\n")
    assert post(connection, {"x": 1})[0] == 200
    scored = time.monotonic()
    while summary(home)["requests"] < 1:  # `nimbus endpoint show` reads the same summary
        # The README promises about a second; three leave room for a busy machine
        assert time.monotonic() - scored < 3.0, "the request did not reach the telemetry within 3 s"
        time.sleep(0.05)
    assert process.poll() is None  # written by the periodic flush, not by a shutdown
