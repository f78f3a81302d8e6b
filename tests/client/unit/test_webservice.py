"""InferenceConfig and DeploymentConfig validation, and what deploy() and Webservice send (against a fake service)."""
from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest

from nimbus.client import ApiClient
from nimbus.exceptions import AuthenticationError, InvalidError, NotFoundError
from nimbus.webservice import (
    DeploymentConfig, InferenceConfig, Webservice, WebserviceDeploymentError, WebserviceScoringError,
    WebserviceTimeout, deploy, model_ids,
)
from nimbus.workspace import Workspace
from tests.client.unit.fake_endpoints import USER_TOKEN, FakeEndpoints


@pytest.fixture
def service(monkeypatch) -> FakeEndpoints:
    return FakeEndpoints().install(monkeypatch)


@pytest.fixture
def workspace() -> Workspace:
    return Workspace("team", client=ApiClient("http://nimbus.test", USER_TOKEN))


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "src"
    (folder / "pkg").mkdir(parents=True)
    (folder / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (folder / "pkg" / "helpers.py").write_text("")
    (folder / "notes.tmp").write_text("scratch")
    (folder / ".amlignore").write_text("*.tmp\n")
    return folder


def iris(version=3):
    return SimpleNamespace(name="iris", version=version)  # all deploy() needs of a nimbus.model.Model


# --- InferenceConfig ------------------------------------------------------------------------------------
def test_source_directory_defaults_to_the_scripts_folder(source):
    config = InferenceConfig(source / "score.py")
    assert (config.source_directory, config.entry_script) == (str(source), "score.py")


def test_entry_script_is_relative_to_the_source_directory(source):
    (source / "pkg" / "serve.py").write_text("")
    assert InferenceConfig("pkg/serve.py", source_directory=source).entry_script == "pkg/serve.py"
    assert InferenceConfig(source / "pkg" / "serve.py", source_directory=source).entry_script == "pkg/serve.py"


@pytest.mark.parametrize("script, folder, field", [
    ("missing.py", ".", "entry_script"),
    ("../outside.py", ".", "entry_script"),
    ("score.py", "nope", "source_directory"),
    ("", ".", "entry_script"),
    ("pkg", ".", "entry_script"),
])
def test_bad_inference_config_names_the_field(source, script, folder, field):
    (source.parent / "outside.py").write_text("")
    with pytest.raises(InvalidError) as error:
        InferenceConfig(script, source_directory=source / folder if folder != "." else source)
    assert error.value.field == field and str(error.value).startswith(field)


def test_environment_is_a_registered_environment_a_name_or_none(source):
    from nimbus import Environment

    with pytest.raises(InvalidError) as error:
        InferenceConfig("score.py", source_directory=source, environment="")
    assert error.value.field == "environment"
    unregistered = Environment("tiny")
    with pytest.raises(InvalidError) as error:
        InferenceConfig("score.py", source_directory=source, environment=unregistered)
    assert error.value.field == "environment" and "not registered" in str(error.value)
    unregistered.version = 2  # as register() or Environment.get() leave it
    assert InferenceConfig("score.py", source_directory=source, environment=unregistered).environment == "tiny:2"


# --- DeploymentConfig -----------------------------------------------------------------------------------
def test_deployment_config_defaults_are_the_contracts():
    assert DeploymentConfig().to_dict() == {"memory_mb": 1024, "timeout_s": 60, "reserved_concurrency": None,
                                            "provisioned_concurrency": None, "min_instances": 0, "max_instances": None,
                                            "capture_rate": 0.0}


@pytest.mark.parametrize("settings, field", [
    ({"memory_mb": 64}, "memory_mb"),
    ({"memory_mb": 20000}, "memory_mb"),
    ({"memory_mb": 512.0}, "memory_mb"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"timeout_s": True}, "timeout_s"),
    ({"reserved_concurrency": -1}, "reserved_concurrency"),
    ({"max_instances": 1001}, "max_instances"),
    ({"provisioned_concurrency": -1}, "provisioned_concurrency"),
    ({"reserved_concurrency": 2, "provisioned_concurrency": 3}, "provisioned_concurrency"),
    ({"min_instances": -1}, "min_instances"),
    ({"max_instances": 0}, "max_instances"),
    ({"min_instances": 3, "max_instances": 2}, "max_instances"),
    ({"capture_rate": 1.5}, "capture_rate"),
    ({"capture_rate": math.nan}, "capture_rate"),
    ({"capture_rate": "0.1"}, "capture_rate"),
])
def test_bad_deployment_config_names_the_field(settings, field):
    with pytest.raises(InvalidError) as error:
        DeploymentConfig(**settings)
    assert error.value.field == field and str(error.value).startswith(field)


def test_capture_rate_is_sent_as_a_float():
    assert DeploymentConfig(capture_rate=1, min_instances=0, max_instances=4).to_dict()["capture_rate"] == 1.0


# --- models -----------------------------------------------------------------------------------------------
def test_models_may_be_model_objects_or_strings():
    assert model_ids([iris(3), "iris:prod", "digits:1"]) == ["iris:3", "iris:prod", "digits:1"]


@pytest.mark.parametrize("models, field", [
    ([], "models"), ("iris:3", "models"), (["iris"], "models[0]"), ([iris(), "iris:"], "models[1]"),
    ([SimpleNamespace(name="iris")], "models[0]"),
])
def test_bad_models_name_the_field(models, field):
    with pytest.raises(InvalidError) as error:
        model_ids(models)
    assert error.value.field == field


# --- deploy -----------------------------------------------------------------------------------------------
def test_deploy_snapshots_the_folder_and_puts_the_deployment(service, workspace, source):
    config = DeploymentConfig(memory_mb=512, timeout_s=5, max_instances=2, capture_rate=0.25)
    web = deploy(workspace, "blue", [iris(3), "iris:prod"], InferenceConfig(source / "score.py", environment="py311"),
                 config, endpoint="iris", show_progress=False)

    assert [path for _, path, _, _, _ in service.calls] == [
        "/v1/workspaces/team/snapshots/uploads", "/v1/workspaces/team/snapshots",
        "/v1/workspaces/team/endpoints/iris/deployments/blue"]
    assert sorted(f["path"] for f in service.manifests[0]) == [".amlignore", "pkg/helpers.py", "score.py"]
    (method, _, _, _, headers), = service.requests("PUT", "/deployments/blue")
    body = service.endpoints["iris"]["deployments"]["blue"]
    assert method == "PUT" and headers["Authorization"] == f"Bearer {USER_TOKEN}"
    assert {k: body[k] for k in ("models", "snapshot_id", "entry_script", "environment", "config")} == {
        "models": ["iris:3", "iris:prod"], "snapshot_id": "s" * 64, "entry_script": "score.py",
        "environment": "py311", "config": config.to_dict()}
    assert isinstance(web, Webservice) and web.name == "iris"
    assert web.deployment_details["state"] == "Succeeded"
    assert web.scoring_uri == "http://nimbus.test/v1/workspaces/team/endpoints/iris/score"


def test_endpoint_defaults_to_the_deployment_name(service, workspace, source):
    web = deploy(workspace, "iris", ["iris:1"], InferenceConfig(source / "score.py"), show_progress=False)
    assert web.name == "iris" and service.requests("PUT", "/endpoints/iris/deployments/iris")
    assert service.endpoints["iris"]["deployments"]["iris"]["config"] == DeploymentConfig().to_dict()


def test_a_failed_deployment_raises_with_the_services_error(service, workspace, source):
    (source / "broken.py").write_text("import missing\n")
    with pytest.raises(WebserviceDeploymentError, match="No module named 'missing'") as error:
        deploy(workspace, "blue", ["iris:1"], InferenceConfig(source / "broken.py"), endpoint="iris",
               show_progress=False)
    assert "'blue'" in str(error.value) and error.value.details["deployment"]["state"] == "Failed"


def test_deploy_waits_while_the_deployment_rolls_out(service, workspace, source):
    (source / "slow.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    web = deploy(workspace, "blue", ["iris:1"], InferenceConfig(source / "slow.py"), endpoint="iris",
                 show_progress=False, poll_seconds=0)
    assert web.deployment_details["state"] == "Succeeded" and "step" not in web.deployment_details
    assert len(service.requests("GET", "/endpoints/iris/deployments/blue")) == service.looks

    # An update is waited for the same way; without waiting, deploy answers while it is Updating
    web = deploy(workspace, "blue", ["iris:2"], InferenceConfig(source / "slow.py"), endpoint="iris",
                 show_progress=False, wait=False)
    assert (web.deployment_details["state"], web.deployment_details["step"]) == ("Updating", "publish")
    assert len(service.requests("GET", "/endpoints/iris/deployments/blue")) == service.looks
    web.wait_for_deployment(poll_seconds=0)
    assert web.deployment_details["state"] == "Succeeded" and web.deployment_details["revision"] == 2


def test_a_rollout_that_fails_or_outlasts_the_wait_raises(service, workspace, source):
    (source / "late_broken.py").write_text("import missing\n")
    (source / "slow.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    with pytest.raises(WebserviceDeploymentError, match="No module named 'missing'") as error:
        deploy(workspace, "blue", ["iris:1"], InferenceConfig(source / "late_broken.py"), endpoint="iris",
               show_progress=False, poll_seconds=0)
    assert error.value.details["deployment"]["state"] == "Failed"

    service.looks = 10**6
    slept = []
    with pytest.raises(WebserviceTimeout, match="'green' of endpoint 'iris' is still rolling out after 0.05 s"):
        web = deploy(workspace, "green", ["iris:1"], InferenceConfig(source / "slow.py"), endpoint="iris",
                     show_progress=False, wait=False)
        web.wait_for_deployment(timeout_s=0.05, poll_seconds=0.01, sleep=lambda s: slept.append(s) or time.sleep(s))
    assert slept and set(slept) == {0.01}


@pytest.mark.parametrize("name, endpoint, field", [
    ("Blue", None, "name"), ("b", None, "name"), ("blue", "under_score", "endpoint"), ("x" * 33, None, "name"),
])
def test_names_are_checked_before_anything_is_sent(service, workspace, source, name, endpoint, field):
    with pytest.raises(InvalidError) as error:
        deploy(workspace, name, ["iris:1"], InferenceConfig(source / "score.py"), endpoint=endpoint)
    assert error.value.field == field and service.calls == []


def test_the_script_is_checked_again_at_deploy_time(service, workspace, source):
    config = InferenceConfig(source / "score.py")
    (source / "score.py").unlink()
    with pytest.raises(InvalidError) as error:
        deploy(workspace, "blue", ["iris:1"], config, show_progress=False)
    assert error.value.field == "entry_script" and service.calls == []


def test_an_ignored_entry_script_is_refused_before_uploading(service, workspace, source):
    (source / ".amlignore").write_text("score.py\n")
    with pytest.raises(InvalidError, match="ignore file") as error:
        deploy(workspace, "blue", ["iris:1"], InferenceConfig(source / "score.py"), show_progress=False)
    assert error.value.field == "entry_script" and service.calls == []


# --- scoring ----------------------------------------------------------------------------------------------
@pytest.fixture
def endpoint(service, workspace, source) -> Webservice:
    deploy(workspace, "blue", ["iris:1"], InferenceConfig(source / "score.py"), endpoint="iris", show_progress=False)
    service.calls.clear()
    return Webservice(workspace, "iris")


@pytest.mark.parametrize("data, sent", [
    ('{"data": [[1, 2]]}', b'{"data": [[1, 2]]}'),
    ("plain text é", "plain text é".encode()),
    (b"\x00raw", b"\x00raw"),
    ({"data": [[1.5, 2]]}, b'{"data": [[1.5, 2]]}'),
    ([1, None], b"[1, null]"),
    ({"data": SimpleNamespace(tolist=lambda: [[1, 2]])}, b'{"data": [[1, 2]]}'),
])
def test_run_sends_text_and_bytes_as_they_are_and_the_rest_as_json(service, endpoint, data, sent):
    if data == b"\x00raw":
        endpoint.run(data)  # the fake decodes bodies as text: only check what went out
    else:
        assert endpoint.run(data) == {"received": sent.decode()}
    (_, _, _, body, headers), = service.requests("POST", "/score")
    assert body == sent and headers["Content-Type"] == "application/json"


def test_input_that_is_not_json_able_names_the_field(service, endpoint):
    for bad in ({"x": math.inf}, {"x": object()}):
        with pytest.raises(InvalidError) as error:
            endpoint.run(bad)
        assert error.value.field == "input_data"
    assert service.requests("POST", "/score") == []


def test_run_authenticates_with_the_endpoint_key_fetched_once(service, endpoint):
    endpoint.run("a")
    endpoint.run("b")
    assert len(service.requests("GET", "/keys")) == 1
    primary = service.endpoints["iris"]["keys"]["primary_key"]
    for _, _, _, _, headers in service.requests("POST", "/score"):
        assert headers["Authorization"] == f"Bearer {primary}"
    # the user's own token is untouched for every other call
    endpoint.get_details()
    assert service.calls[-1][4]["Authorization"] == f"Bearer {USER_TOKEN}"


def test_scoring_errors_carry_status_and_message(service, endpoint):
    with pytest.raises(WebserviceScoringError) as error:
        endpoint.run("boom")
    assert (error.value.status, error.value.code, error.value.message) == (500, "ScoringError", "ValueError: boom")


def test_scoring_a_missing_endpoint_is_not_found(service, workspace):
    with pytest.raises(NotFoundError):
        Webservice(workspace, "nothing").run("a")


# --- keys -------------------------------------------------------------------------------------------------
def test_get_keys_and_regen_key_any_case(service, endpoint):
    primary, secondary = endpoint.get_keys()
    new_primary, same_secondary = endpoint.regen_key("Primary")
    assert new_primary != primary and same_secondary == secondary
    assert endpoint.regen_key("SECONDARY")[1] != secondary
    assert [call[3] for call in service.requests("POST", "/keys/regenerate")] == [b'{"key":"primary"}',
                                                                                  b'{"key":"secondary"}']
    endpoint.run("a")  # the regenerated primary key is used without asking again
    assert len(service.requests("GET", "/keys")) == 1
    assert service.requests("POST", "/score")[0][4]["Authorization"] == f"Bearer {new_primary}"


def test_regen_key_refuses_other_names(service, endpoint):
    with pytest.raises(InvalidError) as error:
        endpoint.regen_key("tertiary")
    assert error.value.field == "key" and service.calls == []


def test_a_key_regenerated_elsewhere_is_fetched_again_once(service, workspace, endpoint):
    endpoint.run("a")
    Webservice(workspace, "iris").regen_key("primary")
    assert endpoint.run("b") == {"received": "b"}
    assert len(service.requests("GET", "/keys")) == 2


def test_a_refused_key_is_fetched_again_once_only(service, endpoint):
    endpoint.run("a")
    service.score = lambda *args: (401, {"code": "Unauthorized", "message": "a valid endpoint key is required"})
    with pytest.raises(AuthenticationError, match="endpoint key"):
        endpoint.run("b")
    assert len(service.requests("GET", "/keys")) == 2 and len(service.requests("POST", "/score")) == 3


# --- running the endpoint ---------------------------------------------------------------------------------
def test_endpoint_view(service, workspace, source, endpoint):
    assert endpoint.traffic == {"blue": 100}
    deploy(workspace, "green", ["iris:2"], InferenceConfig(source / "score.py"), endpoint="iris",
           show_progress=False)
    assert endpoint.traffic == {"blue": 100}  # as first read: details are kept until re-read
    endpoint.get_details()
    assert endpoint.traffic == {"blue": 100, "green": 0}
    assert [d["name"] for d in endpoint.deployments] == ["blue", "green"] and endpoint.state == "Succeeded"
    assert [w.name for w in Webservice.list(workspace)] == ["iris"]


def test_set_traffic_sends_weights_and_checks_them_first(service, workspace, source, endpoint):
    deploy(workspace, "green", ["iris:2"], InferenceConfig(source / "score.py"), endpoint="iris",
           show_progress=False)
    assert endpoint.set_traffic({"blue": 30, "green": 70}) == {"blue": 30, "green": 70}
    assert service.requests("PUT", "/traffic")[0][3] == b'{"traffic":{"blue":30,"green":70}}'
    for bad, field in (({"blue": 50}, "traffic"), ({"blue": 100.0}, "traffic.blue"), ({}, "traffic"),
                       ({"blue": 101, "green": -1}, "traffic.blue")):
        with pytest.raises(InvalidError) as error:
            endpoint.set_traffic(bad)
        assert error.value.field == field
    assert len(service.requests("PUT", "/traffic")) == 1


def test_logs_default_to_the_busiest_deployment(service, workspace, source, endpoint):
    deploy(workspace, "green", ["iris:2"], InferenceConfig(source / "score.py"), endpoint="iris",
           show_progress=False)
    endpoint.set_traffic({"blue": 20, "green": 80})
    assert endpoint.get_logs(tail=5) == "green: last 5 lines\n"
    assert endpoint.get_logs("blue") == "blue: last 200 lines\n"
    with pytest.raises(InvalidError):
        endpoint.get_logs(tail=0)


def test_telemetry_asks_for_the_window(service, endpoint):
    summary = endpoint.telemetry(15)
    assert summary["window_minutes"] == 15 and summary["deployments"]["blue"]["p95_ms"] == 9.5
    assert service.requests("GET", "/telemetry")[0][2] == {"minutes": "15"}


def test_wait_for_deployment_raises_when_failed(service, workspace, source, endpoint, capsys):
    endpoint.wait_for_deployment(show_output=True)
    assert "iris/blue: Succeeded" in capsys.readouterr().out
    (source / "slow.py").write_text("")
    deploy(workspace, "green", ["iris:2"], InferenceConfig(source / "slow.py"), endpoint="iris", show_progress=False,
           wait=False)
    endpoint.wait_for_deployment(show_output=True, poll_seconds=0)  # every deployment: each state once
    assert capsys.readouterr().out.splitlines() == ["iris/blue: Succeeded", "iris/green: Creating",
                                                    "iris/green: Succeeded"]
    service.endpoints["iris"]["deployments"]["blue"].update(state="Failed", error="RuntimeError: init failed")
    with pytest.raises(WebserviceDeploymentError, match="init failed"):
        endpoint.wait_for_deployment()


def test_delete_deployment_and_endpoint(service, workspace, source, endpoint):
    deploy(workspace, "green", ["iris:2"], InferenceConfig(source / "score.py"), endpoint="iris",
           show_progress=False)
    endpoint.delete_deployment("green")
    assert [d["name"] for d in endpoint.deployments] == ["blue"]  # re-read after the change
    endpoint.delete()
    assert service.requests("DELETE", "/endpoints/iris") and Webservice.list(workspace) == []
