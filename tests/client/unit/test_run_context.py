"""Run.get_context(): the live run inside a submitted script, an OfflineRun when started by hand."""
from __future__ import annotations

import threading
import uuid

import orjson
import pytest

import nimbus.experiment
from nimbus import Run
from nimbus.exceptions import ConfigurationError, InvalidError
from nimbus.offline_run import OfflineRun

CONTEXT = {"NIMBUS_URL": "http://nimbus.invalid:8080", "NIMBUS_RUN_TOKEN": "nmb_runtoken",
           "NIMBUS_WORKSPACE": "team", "NIMBUS_RUN_ID": "r-1"}


class RecordingClient:
    """Stands in for ApiClient: records every call and answers as a service would."""

    def __init__(self, url, token, **ignored):
        self.url, self.token = url.rstrip("/"), token
        self.calls = []
        self._lock = threading.Lock()

    def request(self, method, path, *, params=None, json=None, data=None, retry=None):
        body = json if data is None else orjson.loads(data)
        with self._lock:
            self.calls.append((method, path, body))
        if path.endswith("/runs"):
            return {"id": "child-1", "status": "Running", "parent_id": body.get("parent_id")}
        return {"status": "Running"}

    def get(self, path, /, **params):
        return self.request("GET", path, params=params)

    def post(self, path, body=None, *, retry=False):
        return self.request("POST", path, json=body or {}, retry=retry)


@pytest.fixture
def context_env(monkeypatch, tmp_path):
    # A broken profile proves the context run never looks one up.
    (tmp_path / "profile.json").write_text("{not json")
    monkeypatch.setenv("NIMBUS_CONFIG", str(tmp_path / "profile.json"))
    for name, value in CONTEXT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NIMBUS_RUN_ID", f"r-{uuid.uuid4().hex}")  # metrics are buffered per run: keep tests apart
    return monkeypatch


# --- get_context -------------------------------------------------------------------------------------
def test_inside_a_submitted_script_the_context_is_the_live_run(context_env):
    run = Run.get_context()

    assert isinstance(run, Run)
    assert run.id.startswith("r-")
    assert run.workspace.name == "team"
    assert run.workspace.client.url == "http://nimbus.invalid:8080"
    assert run.workspace.client._auth["Authorization"] == "Bearer nmb_runtoken"


@pytest.mark.parametrize("missing", sorted(CONTEXT))
def test_without_any_one_variable_the_context_is_offline(context_env, missing):
    context_env.delenv(missing)

    assert isinstance(Run.get_context(), OfflineRun)
    with pytest.raises(ConfigurationError, match=missing):
        Run.get_context(allow_offline=False)


def test_complete_in_a_submitted_script_sends_metrics_but_leaves_the_status_to_the_runner(context_env):
    context_env.setattr(nimbus.experiment, "ApiClient", RecordingClient)
    run = Run.get_context()
    run.log("loss", 0.5)

    run.complete()

    paths = [path for _, path, _ in run.workspace.client.calls]
    assert paths == [f"/v1/workspaces/team/runs/{run.id}/metrics"]


def test_an_error_in_a_submitted_script_is_left_for_the_runner_to_report(context_env):
    context_env.setattr(nimbus.experiment, "ApiClient", RecordingClient)
    run = Run.get_context()

    with pytest.raises(ZeroDivisionError):
        with run:
            1 / 0

    assert not any(path.endswith("/status") for _, path, _ in run.workspace.client.calls)


def test_a_submitted_script_creates_child_runs_with_its_run_token(context_env):
    context_env.setattr(nimbus.experiment, "ApiClient", RecordingClient)
    run = Run.get_context()

    child = run.child_run("fold-1")

    assert child.id == "child-1"
    method, path, body = run.workspace.client.calls[-1]
    assert (method, path) == ("POST", "/v1/workspaces/team/runs")
    assert body["parent_id"] == run.id and body["display_name"] == "fold-1"
    assert child.workspace.client.token == "nmb_runtoken"


# --- OfflineRun --------------------------------------------------------------------------------------
def test_an_offline_run_prints_one_line_per_call_and_keeps_metrics(capsys):
    run = OfflineRun()

    run.log("loss", 0.5)
    run.log("loss", 0.25)
    run.log("accuracy", 0.9)
    run.log_list("lrs", [0.1, 0.01])
    run.log_row("per_class", cls="cat", f1=0.8)
    run.log_row("per_class", cls="dog", f1=0.7)
    run.log_table("confusion", {"predicted": [0, 1], "actual": [1, 1]})
    run.set_tags({"team": "vision"})
    run.add_properties({"seed": 7})

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9 and all(line.startswith("[offline run] ") for line in lines)
    assert lines[0] == "[offline run] log loss = 0.5"
    assert run.get_metrics() == {
        "loss": [0.5, 0.25], "accuracy": 0.9, "lrs": [0.1, 0.01],
        "per_class": {"cls": ["cat", "dog"], "f1": [0.8, 0.7]},
        "confusion": {"predicted": [0, 1], "actual": [1, 1]},
    }
    assert run.get_metrics("accuracy") == {"accuracy": 0.9}
    assert run.get_tags() == {"team": "vision"} and run.get_properties() == {"seed": "7"}


def test_an_offline_run_never_raises_for_files(tmp_path, capsys):
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "sub" / "a.txt").write_text("abc")
    run = OfflineRun()

    assert run.upload_file("missing.bin", tmp_path / "nope.bin") == {"path": "missing.bin", "size": 0}
    assert run.upload_folder("outputs", tmp_path / "out") == [{"path": "outputs/sub/a.txt", "size": 3}]
    assert run.upload_folder("nothing", tmp_path / "absent") == []
    run.log_image("curve", path=tmp_path / "absent.png")

    assert run.get_file_names() == ["missing.bin", "outputs/sub/a.txt"]
    assert "missing" in capsys.readouterr().out


def test_an_offline_run_checks_values_as_a_live_run_does():
    run = OfflineRun()
    run.log("loss", 1)

    with pytest.raises(InvalidError):
        run.log("loss-text", "high")
    with pytest.raises(InvalidError):
        run.log_list("loss", [1, 2])  # loss is a scalar metric


def test_offline_children_and_ending(capsys):
    run = OfflineRun()
    child = run.child_run("fold-1", tags={"k": 1})
    child.complete()

    with pytest.raises(RuntimeError):
        with run:
            raise RuntimeError("diverged")

    assert child.parent is run and child.get_tags() == {"k": "1"} and child.get_status() == "Completed"
    assert run.get_children() == [child]
    assert run.get_status() == "Failed" and run.get_details()["error"] == {"message": "diverged"}
    assert capsys.readouterr().out.splitlines()[-1].endswith("Failed: diverged")
