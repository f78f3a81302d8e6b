"""Workspaces and their members through the SDK."""
from __future__ import annotations

import pytest

from nimbus import ConflictError, Experiment, NotFoundError, Workspace


def test_create_list_get_and_delete(platform, workspace):
    created = Workspace.create("vision", "image models", url=platform.url, token=platform.token)
    assert created.get_details()["description"] == "image models"
    assert Workspace.create("vision", url=platform.url, token=platform.token, exist_ok=True) == created
    with pytest.raises(ConflictError, match="already exists"):
        Workspace.create("vision", url=platform.url, token=platform.token)
    assert sorted(Workspace.list(url=platform.url, token=platform.token)) == ["default", "vision"]

    Experiment(created, "cnn").start_logging().complete()
    with pytest.raises(ConflictError, match="not empty"):
        created.delete()
    assert created.delete(force=True)["runs"] == 1
    with pytest.raises(NotFoundError):
        Workspace.get("vision", url=platform.url, token=platform.token)


def test_members(workspace, user_token):
    user_token("ann")
    assert workspace.add_member("ann", "contributor")["role"] == "contributor"
    assert {m["user"]: m["role"] for m in workspace.members()} == {"admin": "owner", "ann": "contributor"}
    workspace.remove_member("ann")
    assert [m["user"] for m in workspace.members()] == ["admin"]


def test_experiments_are_listed(workspace):
    assert Experiment.list(workspace) == []
    assert Experiment(workspace, "later").run_count == 0
    Experiment(workspace, "a").start_logging()
    Experiment(workspace, "b").start_logging()
    experiments = {experiment.name: experiment for experiment in Experiment.list(workspace)}
    assert sorted(experiments) == ["a", "b"] and experiments["a"].run_count == 1


def test_workspace_from_the_environment(platform, monkeypatch):
    monkeypatch.setenv("NIMBUS_URL", platform.url)
    monkeypatch.setenv("NIMBUS_TOKEN", platform.token)
    assert Workspace().name == "default"
    assert Workspace().whoami()["user"] == "admin"
