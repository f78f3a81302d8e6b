"""The runner's heartbeat: POST …/runs/{id}/heartbeat, and the runner's background beat."""
from __future__ import annotations

import threading

from nimbus.runtime.heartbeat import Heartbeat

RUNS = "/v1/workspaces/ws/runs"


def test_a_heartbeat_is_recorded_while_the_run_lives(api, services):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    run = api.ok("POST", RUNS, {"experiment": "e", "status": "Running"})
    run_token = services.identity.create_run_token(run["id"], "ws", "admin")

    beat = api.ok("POST", f"{RUNS}/{run['id']}/heartbeat", token=run_token)
    assert beat["status"] == "Running" and beat["heartbeat"]
    assert services.runs.get("ws", run["id"])["heartbeat"] == beat["heartbeat"]

    api.ok("POST", f"{RUNS}/{run['id']}/status", {"status": "Completed"})
    assert api.call("POST", f"{RUNS}/{run['id']}/heartbeat", token=run_token)[0] == 401  # its token ended too
    code, error = api.call("POST", f"{RUNS}/{run['id']}/heartbeat")
    assert code == 409 and "has ended" in error["message"]


def test_a_run_token_beats_for_its_own_run_only(api, services):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    mine, other = (api.ok("POST", RUNS, {"experiment": "e", "status": "Running"}) for _ in range(2))
    token = services.identity.create_run_token(mine["id"], "ws", "admin")
    assert api.call("POST", f"{RUNS}/{other['id']}/heartbeat", token=token)[0] == 403


def test_the_beat_repeats_survives_failures_and_stops():
    beats, done = [], threading.Event()

    def beat():
        beats.append(1)
        if len(beats) == 3:
            done.set()
        if len(beats) % 2:
            raise ConnectionError("the service is away")

    with Heartbeat(beat, 0.01):
        assert done.wait(5)
    count = len(beats)
    assert count >= 3
    done.wait(0.05)
    assert len(beats) == count  # stopped with the block
