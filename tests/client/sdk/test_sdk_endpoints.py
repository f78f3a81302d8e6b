"""Deploying a registered model on the local platform and scoring it through Webservice."""
from __future__ import annotations

import json
import time

import pytest

from nimbus.exceptions import AuthenticationError, ConflictError
from nimbus.model import Model
from nimbus.webservice import (
    DeploymentConfig, InferenceConfig, Webservice, WebserviceDeploymentError, WebserviceScoringError, deploy,
)

ENTRY_SCRIPT = '''
import json

from nimbus import Model

settings = None


def init():
    global settings
    with open(Model.get_model_path("greeting")) as handle:
        settings = json.load(handle)


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("fail"):
        raise ValueError("asked to fail")
    print("scored", data["name"])
    return {"message": f"{settings['greeting']}, {data['name']}"}
'''


@pytest.fixture
def greeting(workspace, tmp_path) -> Model:
    path = tmp_path / "model" / "greeting.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"greeting": "hello"}))
    return Model.register(workspace, "greeting", path, show_progress=False)


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "score.py").write_text(ENTRY_SCRIPT)
    (folder / "broken.py").write_text("def init():\n    raise RuntimeError('no model for you')\n\n"
                                      "def run(raw_data):\n    return raw_data\n")
    return folder


def test_deploy_score_and_operate_an_endpoint(workspace, greeting, source):
    service = deploy(workspace, "blue", [greeting], InferenceConfig(source / "score.py"),
                     DeploymentConfig(memory_mb=256, timeout_s=10), endpoint="hello", show_progress=False)
    assert service.deployment_details["state"] == "Succeeded"
    assert service.deployment_details["models"] == ["greeting:1"]
    assert service.scoring_uri == f"{workspace.url}/v1/workspaces/default/endpoints/hello/score"
    service.wait_for_deployment()

    assert service.run({"name": "ada"}) == {"message": "hello, ada"}
    assert service.run('{"name": "bob"}') == {"message": "hello, bob"}
    with pytest.raises(WebserviceScoringError) as error:
        service.run({"fail": True})
    assert error.value.status == 500 and "ValueError: asked to fail" in error.value.message

    # A key regenerated elsewhere is fetched again; the regenerating object uses its new key at once.
    other = Webservice(workspace, "hello")
    old_primary, _ = other.get_keys()
    new_primary, _ = service.regen_key("Primary")
    assert new_primary != old_primary
    assert other.run({"name": "cy"}) == {"message": "hello, cy"}
    with pytest.raises(AuthenticationError):
        workspace.client.request("POST", service._path("score"), data=b"{}", token=old_primary)

    assert service.get_details()["traffic"] == {"blue": 100} and service.state == "Succeeded"
    assert "scored ada" in service.get_logs()
    summary = _telemetry_once_flushed(service, requests=4)
    assert summary["errors"] == 1 and summary["deployments"]["blue"]["requests"] == 4
    assert 0 < summary["p50_ms"] <= summary["p95_ms"]
    assert [s.name for s in Webservice.list(workspace)] == ["hello"]

    service.delete()
    assert Webservice.list(workspace) == []


def _telemetry_once_flushed(service: Webservice, requests: int) -> dict:
    """Scoring hosts write their counters every couple of seconds: wait for them."""
    deadline = time.monotonic() + 15
    while True:
        summary = service.telemetry(minutes=5)
        if summary["requests"] >= requests or time.monotonic() > deadline:
            return summary
        time.sleep(0.2)


def test_a_failing_init_fails_the_deployment_with_its_error(workspace, greeting, source):
    deploy(workspace, "blue", [greeting], InferenceConfig(source / "score.py"), endpoint="hello",
           show_progress=False)
    with pytest.raises(WebserviceDeploymentError, match="no model for you") as error:
        deploy(workspace, "bad", [greeting], InferenceConfig("broken.py", source_directory=source),
               endpoint="hello", show_progress=False)
    assert error.value.details["deployment"]["state"] == "Failed"
    service = Webservice(workspace, "hello")
    assert service.state == "Failed"
    with pytest.raises(WebserviceDeploymentError, match="'bad' of endpoint 'hello' Failed"):
        service.wait_for_deployment()
    assert service.run({"name": "eve"}) == {"message": "hello, eve"}  # blue still serves


def test_a_second_deployment_takes_traffic_only_when_told(workspace, greeting, source):
    service = deploy(workspace, "blue", [greeting], InferenceConfig(source / "score.py"), endpoint="hello",
                     show_progress=False)
    deploy(workspace, "green", [f"greeting:{greeting.version}"], InferenceConfig(source / "score.py"),
           endpoint="hello", show_progress=False)
    assert service.get_details()["traffic"] == {"blue": 100, "green": 0}
    with pytest.raises(ConflictError):
        service.delete_deployment("blue")  # still takes traffic
    assert service.set_traffic({"blue": 0, "green": 100}) == {"blue": 0, "green": 100}
    assert service.run({"name": "dee"}) == {"message": "hello, dee"}
    assert "scored dee" in service.get_logs()  # the busiest deployment's
    service.delete_deployment("blue")
    assert [d["name"] for d in service.deployments] == ["green"]
