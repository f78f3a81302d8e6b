"""Experiments: created by the first run that names them, counting their runs."""
from __future__ import annotations

from tests.server.api.helpers import every_page, token_param

EXP = "/v1/workspaces/ws/experiments"


def new_run(api, experiment: str | None = "exp", **fields) -> dict:
    return api.ok("POST", "/v1/workspaces/ws/runs", {"experiment": experiment, **fields}, status=201)


def test_first_run_creates_the_experiment_and_runs_are_counted(api):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    assert api.ok("GET", EXP) == {"experiments": [], "next_page_token": None}
    assert api.call("GET", f"{EXP}/mnist")[0] == 404

    first = new_run(api, "mnist")
    shown = api.ok("GET", f"{EXP}/mnist")
    assert shown["name"] == "mnist" and shown["run_count"] == 1 and shown["created_by"] == "admin"
    assert shown["last_run"] >= first["created"]

    new_run(api, "mnist")
    new_run(api, "mnist", parent_id=first["id"])  # a child run counts in its parent's experiment
    new_run(api, "cifar")
    listed = {e["name"]: e["run_count"] for e in api.ok("GET", EXP)["experiments"]}
    assert listed == {"mnist": 3, "cifar": 1}
    assert api.ok("GET", f"{EXP}/mnist/runs")["total"] == 3


def test_experiment_names_are_validated(api):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    for name in ["", "_lead", ".lead", "-lead", "has space", "sl/ash", "a" * 256, "naïve", "tab\t"]:
        status, body = api.call("POST", "/v1/workspaces/ws/runs", {"experiment": name})
        assert status == 400, (name, body)
        assert body["field"] == "experiment"
    status, body = api.call("POST", "/v1/workspaces/ws/runs", {})
    assert status == 400 and body["field"] == "experiment"
    for name in ["_lead", "bad!name"]:
        status, body = api.call("GET", f"{EXP}/{name}")
        assert status == 400 and body["field"] == "experiment"
        status, body = api.call("GET", f"{EXP}/{name}/runs")
        assert status == 400 and body["field"] == "experiment"
    assert api.ok("GET", EXP)["experiments"] == []

    # the longest and the oddest legal names work
    for name in ["a" * 255, "A.b_c-9", "0"]:
        new_run(api, name)
        assert api.ok("GET", f"{EXP}/{name}")["run_count"] == 1


def test_experiments_are_paged(api):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    names = [f"exp{i}" for i in range(5)]
    for name in names:
        new_run(api, name)
    pages = every_page(lambda token: api.ok("GET", f"{EXP}?max_results=2" + token_param(token)))
    assert all(len(page["experiments"]) <= 2 for page in pages)
    assert [e["name"] for page in pages for e in page["experiments"]] == names


def test_experiments_are_per_workspace(api):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    api.ok("POST", "/v1/workspaces", {"name": "other"})
    new_run(api, "exp")
    assert api.ok("GET", "/v1/workspaces/other/experiments")["experiments"] == []
    assert api.call("GET", "/v1/workspaces/other/experiments/exp")[0] == 404
