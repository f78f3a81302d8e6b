"""A deployment's rollout as a state machine: the deploy request answers without waiting, reads and the
sweep take it on (Creating/Updating → Succeeded or Failed), one step at a time and once.

moto makes Lambda functions Active at once; the client here shows the State and LastUpdateStatus Lambda
reports while it applies a change, so the waiting is visible. Local scoring hosts settle in the deploy
request itself, through the same records (the last tests, on both backends).
"""
from __future__ import annotations

import dataclasses
import json
import time

import pytest

from chalicelib.hosting.lambda_host import LambdaHost
from chalicelib.services.deployment_lifecycle import PENDING_PK, ROLLOUT_TIMEOUT_S
from chalicelib.store.table import Query
from tests.server.api.helpers import all_at_once
from tests.server.api.test_endpoints import SCORE_PY, deploy, register, snapshot
from tests.server.api.test_endpoints import hosted, lambda_host  # noqa: F401 - fixtures the last test uses

WS = "/v1/workspaces/ws"
DEPLOYMENTS = f"{WS}/endpoints/calc/deployments"
PENDING, UPDATING = {"State": "Pending"}, {"LastUpdateStatus": "InProgress"}


class BusyLambda:
    """moto's Lambda, except that reads of the function (not of a version) show the next of `shown`, or
    `always` while it is set; publish_version calls are counted (and take `publish_seconds`)."""

    def __init__(self, client):
        self.client = client
        self.shown: list[dict] = []
        self.always: dict | None = None
        self.published: list[str] = []
        self.publish_seconds = 0.0

    def get_function_configuration(self, **request):
        answer = self.client.get_function_configuration(**request)
        if "Qualifier" in request:
            return answer
        if self.always is not None:
            return {**answer, **self.always}
        return {**answer, **self.shown.pop(0)} if self.shown else answer

    def publish_version(self, **request):
        time.sleep(self.publish_seconds)
        answer = self.client.publish_version(**request)
        self.published.append(answer["Version"])
        return answer

    def __getattr__(self, name):
        return getattr(self.client, name)


@pytest.fixture
def aws_only(backend):
    if backend != "aws":
        pytest.skip("local scoring hosts settle in the deploy request (see the last tests)")


@pytest.fixture
def lam(api, backend, aws_only, services, settings) -> BusyLambda:
    """The workspace `ws` with model `doubler:1`, and a LambdaHost on a Lambda that can be busy."""
    import boto3

    role = boto3.client("iam", region_name=settings.region).create_role(
        RoleName="nimbus-scoring", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "lambda.amazonaws.com"}}]}))
    busy = BusyLambda(boto3.client("lambda", region_name=settings.region))
    services.host = LambdaHost(dataclasses.replace(settings, scoring_role_arn=role["Role"]["Arn"]),
                               services.ctx.blobs, lambda_client=busy)
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    register(api, backend, services, "doubler", {"weights.json": b'{"weight": 2}'})
    return busy


def put(api, backend, services, name: str, status: int, **config) -> dict:
    body = {"models": ["doubler:1"], "snapshot_id": snapshot(api, backend, services, {"score.py": SCORE_PY}),
            "entry_script": "score.py", "config": config}
    code, answer = api.call("PUT", f"{DEPLOYMENTS}/{name}", body)
    assert code == status, answer
    return answer


def pending(services) -> list[str]:
    return [i["sk"] for i in services.ctx.table.query_all(Query(PENDING_PK))]


def staged(services) -> list[str]:
    return [b.key for b in services.ctx.blobs.list_all("lambda-packages/")]


def score(api, endpoint="calc"):
    key = api.ok("GET", f"{WS}/endpoints/{endpoint}/keys")["primary_key"]
    response = api.client.http.post(f"{WS}/endpoints/{endpoint}/score", body="{}",
                                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    return response.status_code, json.loads(response.body)


def test_a_deploy_answers_while_the_function_is_pending_and_reads_take_it_on(api, backend, services, lam):
    # Given a function Lambda is still creating
    lam.shown = [PENDING, PENDING]

    # When it is deployed, the request answers at once: 202, Creating, the function made and not published
    started = put(api, backend, services, "blue", 202)
    assert (started["state"], started["step"], started["revision"]) == ("Creating", "publish", 1), started
    assert lam.published == [] and pending(services) == ["ws#calc#blue"] and staged(services) == []
    code, error = score(api)
    assert code == 503 and "still Creating" in error["message"], error

    # Then each read takes it as far as Lambda lets it: still Pending, then published, routed and Succeeded
    assert api.ok("GET", f"{DEPLOYMENTS}/blue")["state"] == "Creating"
    done = api.ok("GET", f"{DEPLOYMENTS}/blue")
    assert done["state"] == "Succeeded" and done["host"]["function_version"] == "1" and "step" not in done
    assert lam.published == ["1"] and pending(services) == []
    assert api.ok("GET", f"{WS}/endpoints/calc")["traffic"] == {"blue": 100}
    assert api.ok("GET", f"{DEPLOYMENTS}/blue")["state"] == "Succeeded" and lam.published == ["1"]


def test_the_endpoint_read_and_the_sweep_take_rollouts_on(api, backend, services, lam):
    lam.always = PENDING
    put(api, backend, services, "blue", 202)
    assert api.ok("GET", f"{WS}/endpoints/calc")["deployments"][0]["state"] == "Creating"
    assert services.deployments.sweep() == {"checked": 1, "settled": 0}

    # Once Lambda is done, the scheduled sweep finishes it
    lam.always = None
    from app import app
    from chalice.test import Client

    with Client(app) as client:
        swept = client.lambda_.invoke("batch_sweep", client.events.generate_cw_event(
            "aws.events", "Scheduled Event", {}, [], region="us-east-1"))
    assert swept.payload == {"checked": 0, "failed": 0}  # the run sweep's counts
    assert pending(services) == [] and lam.published == ["1"]
    shown = api.ok("GET", f"{WS}/endpoints/calc")
    assert shown["deployments"][0]["state"] == "Succeeded"
    assert services.deployments.sweep() == {"checked": 0, "settled": 0}


def test_an_update_is_published_once_lambda_has_applied_code_and_configuration(api, backend, services, lam):
    import boto3

    put(api, backend, services, "blue", 200)
    # The looks: the check and the deploy (ready: the code is written), after the code, after the configuration
    lam.shown = [{}, {}, UPDATING, {}, UPDATING]
    updating = put(api, backend, services, "blue", 202, memory_mb=2048)
    assert (updating["state"], updating["step"]) == ("Updating", "configure")
    assert score(api)[0] != 503  # revision 1 serves meanwhile (moto's echo is no HTTP answer: 502)

    assert api.ok("GET", f"{DEPLOYMENTS}/blue")["step"] == "publish"  # the configuration is written
    done = api.ok("GET", f"{DEPLOYMENTS}/blue")
    assert done["state"] == "Succeeded" and done["revision"] == 2 and done["host"]["function_version"] == "2"
    config = boto3.client("lambda", region_name="us-east-1").get_function_configuration(
        FunctionName=done["host"]["function_name"], Qualifier="2")
    assert config["MemorySize"] == 2048 and lam.published == ["1", "2"]


def test_a_failed_update_is_failed_with_lambdas_reason_and_the_revision_before_serves(api, backend, services, lam):
    blue = put(api, backend, services, "blue", 200)
    assert blue["state"] == "Succeeded" and blue["host"]["function_version"] == "1"

    # Given an update whose code Lambda cannot apply (the looks: the check, the deploy, after the code)
    lam.shown = [{}, {}, UPDATING, {"LastUpdateStatus": "Failed", "LastUpdateStatusReason": "no space left"}]
    updating = put(api, backend, services, "blue", 202, memory_mb=2048)
    assert (updating["state"], updating["step"], updating["revision"]) == ("Updating", "configure", 2)
    assert updating["host"]["function_version"] == "1"  # revision 1 serves meanwhile

    # Then the next look fails it with Lambda's reason; revision 1 still serves and takes the traffic
    failed = api.ok("GET", f"{DEPLOYMENTS}/blue")
    assert failed["state"] == "Failed" and "no space left" in failed["error"], failed
    assert failed["revision"] == 2 and failed["host"]["function_version"] == "1"
    assert lam.published == ["1"] and pending(services) == [] and staged(services) == []
    assert api.ok("PUT", f"{WS}/endpoints/calc/traffic", {"traffic": {"blue": 100}})["traffic"] == {"blue": 100}


def test_concurrent_lookers_publish_one_version(api, backend, services, lam):
    # Given a rollout whose next step is to publish, and a publish that takes a while
    lam.shown, lam.publish_seconds = [PENDING], 0.3
    put(api, backend, services, "blue", 202)

    # When ten readers look at once
    states = []
    assert all_at_once(lambda _: states.append(api.ok("GET", f"{DEPLOYMENTS}/blue")["state"]), 10) == []

    # Then one of them published, and the deployment is Succeeded with that version
    assert lam.published == ["1"] and "Succeeded" in states
    done = api.ok("GET", f"{DEPLOYMENTS}/blue")
    assert done["state"] == "Succeeded" and done["host"]["function_version"] == "1"


def test_one_deployment_of_an_endpoint_rolls_out_at_a_time(api, backend, services, lam):
    lam.always = PENDING
    put(api, backend, services, "blue", 202)
    for name in ("green", "blue"):
        code, error = api.call("PUT", f"{DEPLOYMENTS}/{name}", {
            "models": ["doubler:1"], "snapshot_id": snapshot(api, backend, services, {"score.py": SCORE_PY}),
            "entry_script": "score.py"})
        assert code == 409 and error["field"] == "deployment" and "'blue'" in error["message"], error
        assert "Creating" in error["message"]
    # Other endpoints are not held up; once blue is done, green may follow
    put_other = api.call("PUT", f"{WS}/endpoints/other/deployments/red", {
        "models": ["doubler:1"], "snapshot_id": snapshot(api, backend, services, {"score.py": SCORE_PY}),
        "entry_script": "score.py"})
    assert put_other[0] == 202
    lam.always = None
    assert put(api, backend, services, "green", 200)["state"] == "Succeeded"  # blue is finished first
    assert api.ok("GET", f"{DEPLOYMENTS}/blue")["state"] == "Succeeded"


def test_a_rollout_that_takes_too_long_fails_and_is_undone(api, backend, services, lam):
    now = [time.time()]
    services.ctx.clock = lambda: now[0]
    put(api, backend, services, "blue", 200)
    lam.always = UPDATING  # an earlier change that Lambda never finishes: the new code waits, staged
    blue = put(api, backend, services, "blue", 202, memory_mb=2048)
    assert blue["step"] == "write" and len(staged(services)) == 1

    now[0] += ROLLOUT_TIMEOUT_S + 1
    failed = api.ok("GET", f"{DEPLOYMENTS}/blue")
    assert failed["state"] == "Failed" and "not ready 20 minutes after the deploy" in failed["error"], failed
    assert "'write'" in failed["error"] and staged(services) == [] and pending(services) == []
    assert failed["host"]["function_version"] == "1" and lam.published == ["1"]


def test_a_deployment_rolling_out_can_be_deleted(api, backend, services, lam):
    put(api, backend, services, "blue", 200)
    lam.always = UPDATING
    assert put(api, backend, services, "blue", 202, memory_mb=2048)["state"] == "Updating"
    assert api.ok("DELETE", f"{DEPLOYMENTS}/blue")["deleted"] is True
    assert pending(services) == [] and staged(services) == []
    assert api.call("GET", f"{DEPLOYMENTS}/blue")[0] == 404
    api.ok("DELETE", f"{WS}/endpoints/calc")


# --- both backends: the deploy's own step settles what can be settled at once ------------------------------
def test_a_deploy_settled_in_its_request_leaves_nothing_rolling_out(api, backend, hosted):
    deployed = deploy(api, backend, hosted, "blue")
    assert deployed["state"] == "Succeeded" and "step" not in deployed, deployed
    item = hosted.ctx.table.get("WS#ws", "DEPLOY#calc#blue")
    assert item["progress"] == 1 and "rollout" not in item and item["settled"] and pending(hosted) == []
