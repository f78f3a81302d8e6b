"""Workspace secrets over HTTP: contributors set, list and delete; only a run's own token reads a value."""
from __future__ import annotations

import logging

import pytest

from chalicelib.api.request_telemetry import logger as request_log
from chalicelib.errors import NotFound

WS = "/v1/workspaces/ws"
SECRETS = f"{WS}/secrets"
VALUE = "hunter2-" + "q" * 24


@pytest.fixture
def team(api, user_token):
    """Workspace ws with a contributor and a reader; their tokens."""
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    tokens = {}
    for name, role in (("carol", "contributor"), ("rita", "reader")):
        tokens[name] = user_token(name)
        api.ok("POST", f"{WS}/members", {"user": name, "role": role})
    return tokens


def running_run(api, services, workspace: str = "ws") -> tuple[dict, str]:
    run = api.ok("POST", f"/v1/workspaces/{workspace}/runs", {"experiment": "e", "status": "Running"})
    return run, services.identity.create_run_token(run["id"], workspace, "admin")


def test_a_contributor_sets_lists_and_deletes(api, team):
    info = api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE}, token=team["carol"])
    assert info["name"] == "db-password" and info["created_by"] == "carol" and info["version"] == 1
    listed = api.ok("GET", SECRETS, token=team["carol"])
    assert [s["name"] for s in listed["secrets"]] == ["db-password"]
    assert VALUE not in str(info) + str(listed)
    assert api.ok("DELETE", f"{SECRETS}/db-password", token=team["carol"]) == {"name": "db-password", "deleted": True}
    assert api.ok("GET", SECRETS, token=team["carol"]) == {"secrets": []}
    code, error = api.call("DELETE", f"{SECRETS}/db-password", token=team["carol"])
    assert code == 404 and error["field"] == "name"


def test_setting_reading_and_deleting_a_secret_is_on_the_audit_log_without_its_value(api, services, team):
    me = api.ok("GET", "/v1/whoami", token=team["carol"])
    api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE}, token=team["carol"])
    api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE + "2"}, token=team["carol"])
    run, token = running_run(api, services)
    api.ok("GET", f"{WS}/runs/{run['id']}/secrets/db-password", token=token)
    api.ok("DELETE", f"{SECRETS}/db-password", token=team["carol"])

    log = api.ok("GET", f"{WS}/audit")["entries"][::-1]
    secret_entries = [(e["action"], e["target"], e["actor"], e["actor_run_id"], e["details"])
                      for e in log if e["action"].startswith("secret.")]
    assert secret_entries == [("secret.set", "db-password", "carol", None, {"version": 1}),
                              ("secret.set", "db-password", "carol", None, {"version": 2}),
                              ("secret.read", "db-password", "admin", run["id"], {}),
                              ("secret.deleted", "db-password", "carol", None, {})]
    assert {e["actor_token_id"] for e in log if e["actor"] == "carol"} == {me["token_id"]}
    assert VALUE not in str(log)


def test_a_reader_can_neither_set_list_nor_delete(api, team):
    api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE}, token=team["carol"])
    assert api.call("PUT", f"{SECRETS}/db-password", {"value": "mine"}, token=team["rita"])[0] == 403
    assert api.call("GET", SECRETS, token=team["rita"])[0] == 403
    assert api.call("DELETE", f"{SECRETS}/db-password", token=team["rita"])[0] == 403


def test_a_stranger_learns_nothing(api, team, user_token):
    stranger = user_token("sam")
    assert api.call("PUT", f"{SECRETS}/x", {"value": VALUE}, token=stranger)[0] == 404
    assert api.call("GET", SECRETS, token=stranger)[0] == 404
    assert api.call("GET", SECRETS, token=None)[0] == 401


def test_a_run_reads_a_value_through_its_own_token(api, services, team):
    api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE}, token=team["carol"])
    run, token = running_run(api, services)
    read = api.ok("GET", f"{WS}/runs/{run['id']}/secrets/db-password", token=token)
    assert read == {"name": "db-password", "value": VALUE}
    code, error = api.call("GET", f"{WS}/runs/{run['id']}/secrets/nothing", token=token)
    assert code == 404 and error["field"] == "name"


def test_no_person_reads_a_value_back(api, services, team):
    api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE}, token=team["carol"])
    run, _ = running_run(api, services)
    path = f"{WS}/runs/{run['id']}/secrets/db-password"
    for token in ("default", team["carol"], team["rita"]):  # the admin (the workspace's owner) included
        code, error = api.call("GET", path, token=token)
        assert code == 403 and VALUE not in str(error)


def test_a_run_token_reads_only_its_own_workspace(api, services, team):
    api.ok("POST", "/v1/workspaces", {"name": "other"})
    api.ok("PUT", "/v1/workspaces/other/secrets/db-password", {"value": "theirs"})
    api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE}, token=team["carol"])
    run, token = running_run(api, services)
    foreign_run, foreign_token = running_run(api, services, "other")
    assert api.call("GET", f"/v1/workspaces/other/runs/{foreign_run['id']}/secrets/db-password", token=token)[0] == 403
    assert api.call("GET", f"{WS}/runs/{run['id']}/secrets/db-password", token=foreign_token)[0] == 403
    # nor through another run of its own workspace, nor by setting, listing or deleting
    sibling, _ = running_run(api, services)
    assert api.call("GET", f"{WS}/runs/{sibling['id']}/secrets/db-password", token=token)[0] == 403
    assert api.call("GET", SECRETS, token=token)[0] == 403
    assert api.call("PUT", f"{SECRETS}/db-password", {"value": "x"}, token=token)[0] == 403
    assert api.call("DELETE", f"{SECRETS}/db-password", token=token)[0] == 403


def test_a_run_token_stops_reading_once_its_run_ended(api, services, team):
    api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE}, token=team["carol"])
    run, token = running_run(api, services)
    api.ok("POST", f"{WS}/runs/{run['id']}/status", {"status": "Completed"})
    assert api.call("GET", f"{WS}/runs/{run['id']}/secrets/db-password", token=token)[0] == 401


@pytest.mark.parametrize("body, field", [({}, "value"), ({"value": ""}, "value"), ({"value": 7}, "value"),
                                         ({"value": "x" * 65537}, "value"), ({"value": "x", "v": 1}, "v")])
def test_bad_bodies_are_refused_naming_the_field(api, team, body, field):
    code, error = api.call("PUT", f"{SECRETS}/db-password", body, token=team["carol"])
    assert code == 400 and error["field"] == field


def test_a_bad_name_is_refused_naming_the_field(api, team):
    code, error = api.call("PUT", f"{SECRETS}/bad.name", {"value": VALUE}, token=team["carol"])
    assert code == 400 and error["field"] == "name"


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage() + repr(record.__dict__))


def test_values_never_reach_errors_or_logs(api, team):
    # The API's request log, at its most talkative (botocore's own DEBUG log shows request bodies: it is
    # never turned on in the functions).
    recorder, api_log = Recorder(), logging.getLogger(request_log.name)
    level = api_log.level
    api_log.setLevel(logging.DEBUG)  # setLevel, not the attribute: it clears the level cache
    api_log.addHandler(recorder)
    big = (VALUE * 3000)[:65536]
    # over 64 KiB of UTF-8 bytes, under the character limit: the port refuses it
    code, error = api.call("PUT", f"{SECRETS}/db-password", {"value": "é" * 40000}, token=team["carol"])
    assert code == 400 and error["field"] == "value" and "é" * 8 not in str(error)
    api.ok("PUT", f"{SECRETS}/db-password", {"value": big}, token=team["carol"])
    api_log.removeHandler(recorder)
    api_log.setLevel(level)
    assert any("/secrets/{name}" in line for line in recorder.lines)  # the request log was seen
    assert not [line for line in recorder.lines if VALUE in line or "é" * 8 in line]


def test_a_workspace_with_secrets_is_deleted_only_with_force_and_takes_their_values(api, services, team):
    api.ok("PUT", f"{SECRETS}/db-password", {"value": VALUE}, token=team["carol"])
    assert api.call("DELETE", WS)[0] == 409
    api.ok("DELETE", f"{WS}?force=true")
    with pytest.raises(NotFound):
        services.secrets.get("workspace-secrets/ws/db-password")


@pytest.mark.parametrize("run_config, field", [
    ({"script": "a.py", "secret_variables": {"X": "bad.name"}}, "run_config.secret_variables"),
    ({"script": "a.py", "secret_variables": {"1X": "ok"}}, "run_config.secret_variables"),
    ({"script": "a.py", "environment_variables": {"X": "1"}, "secret_variables": {"X": "ok"}}, "run_config"),
    ({"script": "a.py", "secret_variables": {"X": "absent"}}, "run_config.secret_variables.X"),
])
def test_a_submission_naming_bad_or_missing_secrets_is_refused(api, services, team, run_config, field):
    services.dispatcher = object()  # never reached: the submission is refused first
    snapshot = "a" * 64
    services.ctx.table.put({"pk": "WS#ws", "sk": f"SNAPSHOT#{snapshot}", "entity": "snapshot"})
    code, error = api.call("POST", f"{WS}/runs", {"experiment": "e", "snapshot_id": snapshot, "run_config": run_config},
                           token=team["carol"])
    assert code == 400 and error["field"] == field, error
