"""Workspace secrets through the SDK: ws.get_default_keyvault() for people, Run.get_secret for runs."""
from __future__ import annotations

import pytest

from nimbus import Experiment, Run
from nimbus.client import ApiClient
from nimbus.exceptions import ConfigurationError, ForbiddenError, InvalidError, NimbusError, NotFoundError
from nimbus.runtime.secret_mask import MASK, SOCKET_ENV, MaskServer, SecretMask
from nimbus.workspace import Workspace

VALUE = "sdk-s3cret-" + "z" * 20


def run_context(platform, workspace, monkeypatch) -> Run:
    """Run.get_context() as a submitted script gets it: the runner's variables, with a run token."""
    run = Experiment(workspace, "secrets").start_logging()
    token = platform.services.identity.create_run_token(run.id, workspace.name, "admin")
    for name, value in {"NIMBUS_URL": platform.url, "NIMBUS_RUN_TOKEN": token, "NIMBUS_WORKSPACE": workspace.name,
                        "NIMBUS_RUN_ID": run.id}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    return Run.get_context(allow_offline=False)


def test_the_keyvault_sets_lists_and_deletes(workspace):
    keyvault = workspace.get_default_keyvault()
    info = keyvault.set_secret("db-password", VALUE)
    assert info["name"] == "db-password" and info["version"] == 1
    keyvault.set_secrets({"a": "1", "b": "2"})
    assert [s["name"] for s in keyvault.list_secrets()] == ["a", "b", "db-password"]
    keyvault.delete_secrets(["a", "b"])
    assert [s["name"] for s in keyvault.list_secrets()] == ["db-password"]
    keyvault.delete_secret("db-password")
    assert keyvault.list_secrets() == []
    with pytest.raises(NotFoundError):
        keyvault.delete_secret("db-password")


def test_the_keyvault_checks_names_and_values_first(workspace):
    keyvault = workspace.get_default_keyvault()
    with pytest.raises(InvalidError) as bad:
        keyvault.set_secret("bad_name", VALUE)
    assert bad.value.field == "name"
    with pytest.raises(InvalidError) as empty:
        keyvault.set_secret("ok", "")
    assert empty.value.field == "value"


def test_no_person_reads_a_value_back(workspace, platform):
    workspace.get_default_keyvault().set_secret("db-password", VALUE)
    with pytest.raises(ForbiddenError, match="Run.get_context"):
        workspace.get_default_keyvault().get_secret("db-password")
    run = Experiment(workspace, "secrets").start_logging()
    with pytest.raises(ForbiddenError):  # a person's run: the service refuses the person's token
        run.get_secret("db-password")
    # nor through the raw API
    client = ApiClient(platform.url, platform.token)
    with pytest.raises(ForbiddenError):
        client.get(f"/v1/workspaces/default/runs/{run.id}/secrets/db-password")


def test_a_run_reads_its_workspace_secret(workspace, platform, monkeypatch):
    workspace.get_default_keyvault().set_secrets({"db-password": VALUE, "api-key": "k-123456"})
    run = run_context(platform, workspace, monkeypatch)
    assert run.get_secret("db-password") == VALUE
    assert run.get_secrets(["db-password", "api-key"]) == {"db-password": VALUE, "api-key": "k-123456"}
    with pytest.raises(NotFoundError):
        run.get_secret("nothing")


def test_a_value_read_inside_the_runner_is_masked_before_it_is_returned(workspace, platform, monkeypatch):
    workspace.get_default_keyvault().set_secret("db-password", VALUE)
    run = run_context(platform, workspace, monkeypatch)
    mask = SecretMask()
    server = MaskServer(mask).start()
    try:
        monkeypatch.setenv(SOCKET_ENV, server.path)
        assert run.get_secret("db-password") == VALUE
        assert mask.stream().feed(f"{VALUE}\n") == f"{MASK}\n"
    finally:
        server.close()
    # with the runner's socket gone, the value is not handed out (it could not be masked)
    with pytest.raises(NimbusError, match="masked"):
        run.get_secret("db-password")


def test_a_script_started_by_hand_has_no_secrets(monkeypatch):
    for name in ("NIMBUS_RUN_ID", "NIMBUS_RUN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="submitted runs"):
        Run.get_context().get_secret("db-password")


def test_workspace_offers_the_keyvault_without_a_request(platform):
    keyvault = Workspace("default", platform.url, platform.token).get_default_keyvault()
    assert repr(keyvault) == "Keyvault(workspace='default')"
