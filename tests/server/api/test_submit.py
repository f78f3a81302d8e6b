"""Submitting script runs: snapshots required, idempotent client tokens, and run tokens' scope."""
from __future__ import annotations

import hashlib

import pytest

from chalicelib.compute.dispatcher import Dispatcher
from nimbus.runtime.job_spec import JobSpec

WS = "/v1/workspaces/team"
CONFIG = {"script": "train.py", "arguments": ["--epochs", "2"], "max_run_duration_s": 60}


class RecordingDispatcher(Dispatcher):
    """The port's test double: remembers what it was asked to run or stop."""

    def __init__(self):
        self.submitted: list[JobSpec] = []
        self.canceled: list[str] = []

    def submit(self, spec: JobSpec) -> None:
        self.submitted.append(spec)

    def cancel(self, run_id: str) -> bool:
        self.canceled.append(run_id)
        return True


@pytest.fixture
def dispatcher(services):
    services.dispatcher = RecordingDispatcher()
    return services.dispatcher


@pytest.fixture
def snapshot_id(api, services):
    """A workspace `team` holding a one-file snapshot."""
    api.ok("POST", "/v1/workspaces", {"name": "team"})
    content = b"print('hello')\n"
    digest = hashlib.sha256(content).hexdigest()
    prefix = services.workspaces.record("team")["blob_prefix"]
    services.ctx.blobs.put_bytes(f"{prefix}snapshots/content/{digest}", content)
    created = api.ok("POST", f"{WS}/snapshots", {"files": [{"path": "train.py", "digest": digest,
                                                             "size": len(content)}]})
    return created["id"]


def submit(api, snapshot_id, **extra):
    return api.call("POST", f"{WS}/runs", {"experiment": "exp", "snapshot_id": snapshot_id, "run_config": CONFIG,
                                          **extra})


def test_a_submitted_run_is_queued_with_its_configuration_and_dispatched(api, dispatcher, snapshot_id):
    git = {"remote": "git@example.org:team/repo.git", "branch": "main", "commit": "a" * 40, "dirty": False}
    status, run = submit(api, snapshot_id, git=git, ci={"provider": "generic"})
    assert status == 201 and run["status"] == "Queued"
    assert run["snapshot_id"] == snapshot_id and run["run_config"]["script"] == "train.py"
    assert run["git"] == git and run["ci"] == {"provider": "generic"}
    assert dispatcher.submitted == [JobSpec(run["id"], "team", 60)]


def test_the_same_client_token_returns_the_first_run(api, dispatcher, snapshot_id):
    _, first = submit(api, snapshot_id, client_token="retry-1")
    _, again = submit(api, snapshot_id, client_token="retry-1")
    assert again["id"] == first["id"] and len(dispatcher.submitted) == 1
    assert api.ok("GET", f"{WS}/experiments/exp")["run_count"] == 1


def test_submission_needs_a_known_snapshot_a_config_and_a_dispatcher(api, services, dispatcher, snapshot_id):
    status, body = submit(api, "f" * 64)
    assert status == 400 and body["field"] == "snapshot_id"
    status, body = api.call("POST", f"{WS}/runs", {"experiment": "exp", "snapshot_id": snapshot_id})
    assert status == 400 and body["field"] == "run_config"
    status, body = api.call("POST", f"{WS}/runs", {"experiment": "exp", "snapshot_id": snapshot_id,
                                                  "run_config": {"script": "a.py", "command": "b"}})
    assert status == 400 and body["field"] == "run_config"
    status, body = api.call("POST", f"{WS}/runs", {"experiment": "exp", "client_token": "x"})
    assert status == 400 and body["field"] == "client_token"
    services.dispatcher = None
    status, body = submit(api, snapshot_id)
    assert status == 400 and body["field"] == "run_config.compute"


def test_cancel_stops_the_job(api, dispatcher, snapshot_id):
    _, run = submit(api, snapshot_id)
    assert api.ok("POST", f"{WS}/runs/{run['id']}/cancel")["status"] == "Canceled"
    assert dispatcher.canceled == [run["id"]]


def test_a_run_token_acts_on_its_run_only_and_expires_with_it(api, services, dispatcher, snapshot_id):
    # Given two submitted runs and a token for the first
    _, mine = submit(api, snapshot_id)
    _, other = submit(api, snapshot_id)
    token = services.identity.create_run_token(mine["id"], "team", "admin")
    run_path = f"{WS}/runs/{mine['id']}"

    # It writes its own run: status, metrics, logs, child runs
    assert api.ok("POST", f"{run_path}/status", {"status": "Running"}, token=token)["status"] == "Running"
    api.ok("POST", f"{run_path}/metrics", {"metrics": [{"name": "acc", "values": [0.9]}]}, token=token)
    api.ok("POST", f"{run_path}/logs/stdout", {"text": "hi\n"}, token=token)
    child = api.ok("POST", f"{WS}/runs", {"parent_id": mine["id"], "status": "Running"}, token=token)
    assert child["parent_id"] == mine["id"]
    grandchild = api.ok("POST", f"{WS}/runs", {"parent_id": child["id"], "status": "Running"}, token=token)
    api.ok("POST", f"{WS}/runs/{grandchild['id']}/metrics", {"metrics": [{"name": "loss", "values": [0.1]}]},
           token=token)
    assert api.ok("POST", f"{WS}/runs/{grandchild['id']}/status", {"status": "Completed"}, token=token)["status"] \
        == "Completed"
    assert api.ok("GET", "/v1/whoami", token=token)["run_id"] == mine["id"]

    # It reads its own snapshot
    assert api.ok("GET", f"{WS}/snapshots/{snapshot_id}/downloads", token=token)["files"][0]["path"] == "train.py"

    # It cannot touch another run, list the workspace or create unrelated runs
    for method, path, body in [
        ("GET", f"{WS}/runs/{other['id']}", None),
        ("POST", f"{WS}/runs/{other['id']}/metrics", {"metrics": [{"name": "acc", "values": [1]}]}),
        ("GET", f"{WS}/experiments", None),
        ("GET", "/v1/workspaces", None),
        ("POST", f"{WS}/runs", {"experiment": "exp", "status": "Running"}),
        ("POST", "/v1/workspaces", {"name": "stolen"}),
        ("GET", f"{WS}/snapshots/{snapshot_id}", None),
        ("GET", f"/v1/workspaces/default/runs/{mine['id']}", None),
    ]:
        status, answer = api.call(method, path, body, token=token)
        assert status == 403, (method, path, answer)

    # Once its run ends, it is refused
    api.ok("POST", f"{run_path}/status", {"status": "Completed"}, token=token)
    status, _ = api.call("GET", run_path, token=token)
    assert status == 401


def test_an_output_path_is_fixed_with_the_run_id(api, dispatcher, snapshot_id):
    config = {**CONFIG, "arguments": ["${{outputs.out}}"],
              "outputs": [{"name": "out", "datastore": "workspaceblobstore", "path": "prepared/{run-id}/"}]}
    status, run = submit(api, snapshot_id, run_config=config)
    assert status == 201
    assert run["run_config"]["outputs"] == [{"name": "out", "datastore": "workspaceblobstore",
                                             "path": f"prepared/{run['id']}", "register_as": None}]


def test_dataset_inputs_are_pinned_and_recorded_as_uses(api, services, dispatcher, snapshot_id):
    prefix = services.workspaces.record("team")["blob_prefix"]
    services.ctx.blobs.put_bytes(f"{prefix}datastore/rows.csv", b"a\n1\n")
    path = [{"datastore": "workspaceblobstore", "path": "rows.csv"}]
    made = api.ok("POST", f"{WS}/datasets", {"name": "rows", "type": "tabular", "paths": path})
    config = {**CONFIG, "arguments": ["--data", "${{inputs.rows}}"],
              "inputs": [{"name": "rows", "dataset": "rows", "mode": "download"}]}
    status, run = submit(api, snapshot_id, run_config=config)
    assert status == 201
    assert run["run_config"]["inputs"] == [{"name": "rows", "dataset": "rows", "version": 1, "mode": "download",
                                            "type": "tabular", "fingerprint": made["fingerprint"]}]
    uses = api.ok("GET", f"{WS}/datasets/rows/versions/1/runs")["runs"]
    assert [(u["run_id"], u["input"]) for u in uses] == [(run["id"], "rows")]


@pytest.mark.parametrize("config, status, field", [
    ({"inputs": [{"name": "rows", "dataset": "ghost"}]}, 404, "run_config.inputs[0].dataset"),
    ({"arguments": ["${{inputs.rows}}"]}, 400, "run_config.arguments[0]"),
    ({"inputs": [{"name": "9bad", "dataset": "rows"}]}, 400, "run_config.inputs.0.name"),
    ({"inputs": [{"name": "rows", "dataset": "rows", "mode": "stream"}]}, 400, "run_config.inputs.0.mode"),
    ({"outputs": [{"name": "out", "datastore": "elsewhere", "path": "x"}]}, 404, "run_config.outputs[0].datastore"),
    ({"outputs": [{"name": "out", "datastore": "workspaceblobstore", "path": "../x"}]}, 400,
     "run_config.outputs[0].path"),
    ({"arguments": ["${{outputs.out}}"]}, 400, "run_config.arguments[0]"),
])
def test_bad_inputs_are_refused_and_nothing_is_queued(api, dispatcher, snapshot_id, config, status, field):
    answered, body = submit(api, snapshot_id, run_config={**CONFIG, **config})
    assert (answered, body["field"]) == (status, field), body
    assert dispatcher.submitted == []
