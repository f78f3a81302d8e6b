"""Scoring hosts forked from the prewarmed zygote: they serve, report how they end, and share imports."""
from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time

import psutil
import pytest

from chalicelib.hosting.host_spawner import ForkedHost, HostSpawner
from tests.server.unit.scoring_helpers import SETOSA
from tests.server.unit.test_scoring_host import post, prepare


def wait_ready(folder, process, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not (folder / "ready.json").exists():
        assert process.poll() is None, (folder / "host.log").read_text()
        assert time.monotonic() < deadline, "the host did not start"
        time.sleep(0.02)
    return json.loads((folder / "ready.json").read_text())


@pytest.fixture
def spawner(tmp_path):
    env = {**os.environ, "NIMBUS_BACKEND": "local", "NIMBUS_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    made = HostSpawner(env, tmp_path / "logs")
    spawn, started = made.spawn, []
    made.spawn = lambda folder: started.append(spawn(folder)) or started[-1]
    yield made
    made.close()
    for process in started:  # a failed test leaves no host behind
        if process.poll() is None:
            process.kill()
            process.wait(15)


def test_forked_hosts_serve_learn_their_imports_and_report_their_exit(tmp_path, spawner):
    first_folder = prepare(tmp_path / "first")
    first = spawner.spawn(first_folder)
    assert isinstance(first, ForkedHost)
    ready = wait_ready(first_folder, first)
    port = ready["port"]
    assert "zygote" in " ".join(psutil.Process(first.pid).parent().cmdline())
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert post(connection, {"data": [SETOSA]})[:2] == (200, [0])

    # What its entry script imported (scikit-learn, to unpickle the model) is preloaded for the next one
    spawner.learn(first_folder)
    assert "sklearn.linear_model" in spawner.preloaded
    for thread in threading.enumerate():
        if thread.name == "zygote-preload":
            thread.join(60)
    second_folder = prepare(tmp_path / "second")
    second = spawner.spawn(second_folder)
    # Forked with scikit-learn already imported: a fraction of the first start (seconds against tens of ms)
    assert wait_ready(second_folder, second)["cold_start_s"] < ready["cold_start_s"] / 2

    # The zygote reaps them and records how they ended: SIGTERM is a clean exit
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0 and json.loads((first_folder / "exit.json").read_text()) == {"pid": first.pid, "code": 0}
    second.kill()
    assert second.wait(15) == -signal.SIGKILL


def test_without_prefork_hosts_are_fresh_interpreters(tmp_path, spawner):
    spawner.prefork = False
    folder = prepare(tmp_path / "fresh")
    process = spawner.spawn(folder)
    assert not isinstance(process, ForkedHost) and "chalicelib.scoring.host" in " ".join(process.args)
    wait_ready(folder, process)
    process.terminate()
    assert process.wait(15) == 0
    assert spawner.zygote is None
