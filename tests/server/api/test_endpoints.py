"""Endpoints and deployments through the API: deploy, keys, traffic split, scoring, failures, telemetry.

The records and rules run on both backends, each with its real host: local scoring host processes, or
Lambda under moto (which never runs the code: scoring itself is proven on the local backend).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time

import pytest

from tests.server.api.helpers import transfer

WS = "/v1/workspaces/ws"
ENDPOINTS = f"{WS}/endpoints"
SCORE_PY = b'''import json
from nimbus import Model

def init():
    global weight
    with open(Model.get_model_path("doubler")) as handle:
        weight = json.load(handle)["weight"]

def run(raw_data):
    data = json.loads(raw_data)
    if data.get("fail"):
        raise ValueError("asked to fail")
    if data.get("sleep"):
        import time
        time.sleep(data["sleep"])
    if data.get("unjsonable"):
        return object()
    return [x * weight for x in data["data"]]
'''


@pytest.fixture
def hosted(api, backend, services, settings, tmp_path, request):
    """The workspace `ws` with a registered model `doubler` (v1 weight 2, v2 weight 3) and a real host."""
    if backend == "aws":
        services.host = request.getfixturevalue("lambda_host")
    else:
        from chalicelib.hosting.local_hosts import LocalHosts

        services.host = LocalHosts(settings.home, services.ctx.blobs, services.ctx.table,
                                   on_state=lambda *report: services.deployments.record_state(*report))
        services.host.start()
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    for weight in (2, 3):
        register(api, backend, services, "doubler", {"weights.json": json.dumps({"weight": weight}).encode()})
    yield services
    services.host.stop() if hasattr(services.host, "stop") else None


@pytest.fixture
def lambda_host(services, settings):
    """LambdaHost on moto, with the scoring role the stage would name."""
    import boto3

    from chalicelib.hosting.lambda_host import LambdaHost

    role = boto3.client("iam", region_name=settings.region).create_role(
        RoleName="nimbus-scoring", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "lambda.amazonaws.com"}}]}))
    return LambdaHost(dataclasses.replace(settings, scoring_role_arn=role["Role"]["Arn"]), services.ctx.blobs)


def register(api, backend, services, name: str, files: dict[str, bytes]) -> dict:
    upload = api.ok("POST", f"{WS}/models/{name}/uploads",
                    {"files": [{"path": p, "size": len(d)} for p, d in files.items()]})
    for item in upload["files"]:
        assert transfer(backend, services, "PUT", item["url"], files[item["path"]])[0] == 200
    return api.ok("POST", f"{WS}/models/{name}/versions", {"upload_id": upload["upload_id"]})


def snapshot(api, backend, services, files: dict[str, bytes]) -> str:
    digests = {hashlib.sha256(d).hexdigest(): d for d in files.values()}
    uploads = api.ok("POST", f"{WS}/snapshots/uploads",
                     {"files": [{"digest": k, "size": len(v)} for k, v in digests.items()]})["uploads"]
    for item in uploads:
        assert transfer(backend, services, "PUT", item["url"], digests[item["digest"]])[0] == 200
    manifest = [{"path": p, "digest": hashlib.sha256(d).hexdigest(), "size": len(d)} for p, d in files.items()]
    return api.ok("POST", f"{WS}/snapshots", {"files": manifest})["id"]


def deploy(api, backend, services, name: str, model: str = "doubler:1", script: bytes = SCORE_PY,
           endpoint: str = "calc", status=200, environment: str | None = None, **config) -> dict:
    body = {"models": [model], "snapshot_id": snapshot(api, backend, services, {"score.py": script}),
            "entry_script": "score.py", "config": config, "environment": environment}
    code, answer = api.call("PUT", f"{ENDPOINTS}/{endpoint}/deployments/{name}", body)
    assert code == status, answer
    return answer


def score(api, body, endpoint="calc", key=None, raw=None):
    """(status, answer, deployment) of one scoring request with the endpoint's primary key."""
    key = key or api.ok("GET", f"{ENDPOINTS}/{endpoint}/keys")["primary_key"]
    response = api.client.http.post(f"{ENDPOINTS}/{endpoint}/score", body=raw if raw is not None else json.dumps(body),
                                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    answer = json.loads(response.body) if response.body else None
    headers = {k.lower(): v for k, v in response.headers.items()}
    return response.status_code, answer, headers.get("x-nimbus-deployment")


def test_deploy_creates_the_endpoint_with_all_traffic_and_marks_the_model_in_use(api, backend, hosted):
    deployed = deploy(api, backend, hosted, "blue")
    assert deployed["state"] == "Succeeded", deployed
    assert (deployed["name"], deployed["endpoint"], deployed["models"], deployed["revision"]) == \
        ("blue", "calc", ["doubler:1"], 1)

    endpoint = api.ok("GET", f"{ENDPOINTS}/calc")
    assert endpoint["traffic"] == {"blue": 100}
    assert endpoint["scoring_uri"].endswith("/v1/workspaces/ws/endpoints/calc/score")
    assert [d["name"] for d in endpoint["deployments"]] == ["blue"]
    assert [e["name"] for e in api.ok("GET", ENDPOINTS)["endpoints"]] == ["calc"]

    keys = api.ok("GET", f"{ENDPOINTS}/calc/keys")
    assert keys["primary_key"] != keys["secondary_key"]
    stored = json.dumps(hosted.ctx.table.get("WS#ws", "ENDPOINT#calc"))
    assert keys["primary_key"] not in stored and keys["secondary_key"] not in stored  # only digests

    # The model version in use cannot be deleted; the message names the deployment
    code, error = api.call("DELETE", f"{WS}/models/doubler/versions/1")
    assert code == 409 and "calc/blue" in error["message"], error
    assert api.call("DELETE", f"{WS}/models/doubler/versions/2")[0] == 200


def test_a_deploy_reads_each_model_version_once(api, backend, hosted):
    reads: list[str] = []
    table_get = hosted.ctx.table.get

    def counted(pk, sk, **options):
        reads.append(sk)
        return table_get(pk, sk, **options)

    hosted.ctx.table.get = counted
    deploy(api, backend, hosted, "blue", model="doubler:2")
    # Its files and its in-use mark come from that one read
    assert [sk for sk in reads if sk.startswith("MODELV#")] == ["MODELV#doubler#0000000002"]
    reads.clear()
    deploy(api, backend, hosted, "blue", model="doubler:1")  # and the version it replaces, to release it
    assert sorted(sk for sk in reads if sk.startswith("MODELV#")) == ["MODELV#doubler#0000000001",
                                                                      "MODELV#doubler#0000000002"]


def test_a_second_deployment_takes_no_traffic_until_the_split_changes(api, backend, hosted):
    deploy(api, backend, hosted, "blue")
    assert deploy(api, backend, hosted, "green", model="doubler:2")["state"] == "Succeeded"
    assert api.ok("GET", f"{ENDPOINTS}/calc")["traffic"] == {"blue": 100, "green": 0}

    assert api.ok("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": {"blue": 50, "green": 50}})["traffic"] == \
        {"blue": 50, "green": 50}
    for traffic, field in [({"blue": 50, "green": 40}, "traffic"), ({"blue": 50, "pink": 50}, "traffic.pink"),
                           ({"blue": 101, "green": -1}, "traffic.blue")]:
        code, error = api.call("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": traffic})
        assert (code, error["field"]) == (400, field), error

    # A deployment still taking traffic cannot be deleted; once moved off, it can, and its model is free
    code, error = api.call("DELETE", f"{ENDPOINTS}/calc/deployments/green")
    assert code == 409 and "50%" in error["message"]
    api.ok("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": {"blue": 100, "green": 0}})
    api.ok("DELETE", f"{ENDPOINTS}/calc/deployments/green")
    assert api.ok("GET", f"{ENDPOINTS}/calc")["traffic"] == {"blue": 100}
    assert api.call("DELETE", f"{WS}/models/doubler/versions/2")[0] == 200


def test_keys_roles_and_regeneration(api, backend, hosted, user_token):
    deploy(api, backend, hosted, "blue")
    reader = user_token("rita")
    api.ok("POST", f"{WS}/members", {"user": "rita", "role": "reader"})
    assert api.call("GET", f"{ENDPOINTS}/calc/keys", token=reader)[0] == 403
    assert api.call("GET", f"{ENDPOINTS}/calc", token=reader)[0] == 200
    assert api.call("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": {"blue": 100}}, token=reader)[0] == 403

    old = api.ok("GET", f"{ENDPOINTS}/calc/keys")
    new = api.ok("POST", f"{ENDPOINTS}/calc/keys/regenerate", {"key": "primary"})
    assert new["primary_key"] != old["primary_key"] and new["secondary_key"] == old["secondary_key"]
    assert api.call("POST", f"{ENDPOINTS}/calc/keys/regenerate", {"key": "tertiary"})[1]["field"] == "key"

    # No key, a user token or an old key: 401, before any scoring function runs
    assert score(api, {"data": [1]}, key=old["primary_key"])[0] == 401
    assert score(api, {"data": [1]}, key=api.token)[0] == 401
    assert score(api, {"data": [1]}, endpoint="nope", key=new["primary_key"])[0] == 401


def test_bad_deployments_are_refused_naming_the_field(api, backend, hosted):
    snap = snapshot(api, backend, hosted, {"score.py": SCORE_PY})
    cases = [
        ("calc", "blue", {"models": ["nope:1"], "snapshot_id": snap, "entry_script": "score.py"}, 404, "models[0]"),
        ("calc", "blue", {"models": ["doubler:9"], "snapshot_id": snap, "entry_script": "score.py"}, 404, "models[0]"),
        ("calc", "blue", {"models": ["doubler:1"], "snapshot_id": snap, "entry_script": "other.py"}, 400,
         "entry_script"),
        ("calc", "blue", {"models": ["doubler:1"], "snapshot_id": "0" * 64, "entry_script": "score.py"}, 404,
         "snapshot_id"),
        ("calc", "blue", {"models": [], "snapshot_id": snap, "entry_script": "score.py"}, 400, "models"),
        ("calc", "blue", {"models": ["doubler:1"], "snapshot_id": snap, "entry_script": "score.py",
                          "config": {"memory_mb": 64}}, 400, "config.memory_mb"),
        ("calc", "blue", {"models": ["doubler:1"], "snapshot_id": snap, "entry_script": "score.py",
                          "config": {"min_instances": 3, "max_instances": 2}}, 400, "config"),
        ("Calc", "blue", {"models": ["doubler:1"], "snapshot_id": snap, "entry_script": "score.py"}, 400, "endpoint"),
        ("calc", "blue", {"models": ["doubler:1"], "snapshot_id": snap, "entry_script": "score.py",
                          "environment": "py311"}, 400, "environment"),
        ("calc", "blue", {"models": ["doubler:1"], "snapshot_id": snap, "entry_script": "score.py",
                          "config": {"min_instances": 2, "max_instances": 1}}, 400, "config"),
        ("calc", "b", {"models": ["doubler:1"], "snapshot_id": snap, "entry_script": "score.py"}, 400, "deployment"),
    ]
    for endpoint, name, body, status, field in cases:
        code, error = api.call("PUT", f"{ENDPOINTS}/{endpoint}/deployments/{name}", body)
        assert (code, error.get("field")) == (status, field), (body, error)
    assert api.ok("GET", ENDPOINTS)["endpoints"] == []
    assert api.call("GET", f"{ENDPOINTS}/calc")[0] == 404
    assert api.call("GET", f"{ENDPOINTS}/calc/deployments/blue")[0] == 404


def test_delete_endpoint_removes_its_deployments_and_keys(api, backend, hosted):
    deploy(api, backend, hosted, "blue")
    deploy(api, backend, hosted, "green", model="doubler:2")
    assert api.ok("DELETE", f"{ENDPOINTS}/calc")["deployments"] == ["blue", "green"]
    assert api.call("GET", f"{ENDPOINTS}/calc")[0] == 404
    assert api.ok("GET", ENDPOINTS)["endpoints"] == []
    assert api.call("DELETE", f"{WS}/models/doubler/versions/1")[0] == 200
    with pytest.raises(Exception):
        hosted.secrets.get("endpoint-keys/ws/calc")


# --- scoring: the local backend runs the code ----------------------------------------------------
@pytest.fixture
def local(backend):
    if backend != "local":
        pytest.skip("Lambda under moto never runs the function's code; its handler is tested in-process")


def test_scoring_through_the_api_and_the_hosts_own_url(api, backend, hosted, local):
    deployed = deploy(api, backend, hosted, "blue")
    assert score(api, {"data": [1, 2.5]}) == (200, [2, 5.0], "blue")

    # The host's own URL takes the same keys
    import requests

    key = api.ok("GET", f"{ENDPOINTS}/calc/keys")["secondary_key"]
    direct = requests.post(deployed["host"]["host_url"], json={"data": [4]}, headers={"Authorization": f"Bearer {key}"},
                           timeout=10)
    assert (direct.status_code, direct.json()) == (200, [8])
    assert requests.post(deployed["host"]["host_url"], json={"data": [4]}, timeout=10).status_code == 401


def test_traffic_split_serves_both_and_moves_without_downtime(api, backend, hosted, local):
    deploy(api, backend, hosted, "blue")
    deploy(api, backend, hosted, "green", model="doubler:2")
    key = api.ok("GET", f"{ENDPOINTS}/calc/keys")["primary_key"]
    assert {score(api, {"data": [1]}, key=key)[2] for _ in range(20)} == {"blue"}

    api.ok("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": {"blue": 50, "green": 50}})
    served = [score(api, {"data": [1]}, key=key) for _ in range(60)]  # all on one side: p = 2^-59
    assert {s[2] for s in served} == {"blue", "green"}
    assert all((s[0], s[1]) == (200, [2 if s[2] == "blue" else 3]) for s in served)

    # Updating a deployment in place starts the new revision before the old one stops, and moving the
    # traffic takes effect at once: requests sent all along are all answered
    answers, done = [], threading.Event()

    def keep_scoring():
        while not done.is_set():
            answers.append(score(api, {"data": [1]}, key=key)[0])

    worker = threading.Thread(target=keep_scoring)
    worker.start()
    try:
        updated = deploy(api, backend, hosted, "green", model="doubler:1")
        api.ok("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": {"blue": 0, "green": 100}})
    finally:
        done.set()
        worker.join()
    assert updated["revision"] == 2 and updated["models"] == ["doubler:1"]
    assert answers and set(answers) == {200}
    assert {(tuple(a), d) for _, a, d in (score(api, {"data": [1]}, key=key) for _ in range(10))} == {((2,), "green")}
    # version 2 is no longer used by anything
    assert api.call("DELETE", f"{WS}/models/doubler/versions/2")[0] == 200


def test_failing_entry_scripts_give_clear_states_and_answers(api, backend, hosted, local):
    deploy(api, backend, hosted, "blue", timeout_s=1)
    key = api.ok("GET", f"{ENDPOINTS}/calc/keys")["primary_key"]

    code, error, _ = score(api, {"fail": True}, key=key)
    assert code == 500 and error["code"] == "ScoringError" and "ValueError: asked to fail" in error["message"]
    code, error, _ = score(api, {"unjsonable": True}, key=key)
    assert code == 500 and "not JSON-serialisable" in error["message"]
    code, error, _ = score(api, None, key=key, raw=b"x" * (6 * 1024 * 1024 + 1))
    assert code == 413 and error["field"] == "body"

    # A run() that outlives its timeout: 504, and the host comes back by itself
    code, error, _ = score(api, {"sleep": 3, "data": []}, key=key)
    assert code == 504 and error["code"] == "ScoringTimeout", error
    deadline = time.monotonic() + 30
    while score(api, {"data": [1]}, key=key)[0] != 200:
        assert time.monotonic() < deadline, "the host did not come back after a timeout"
        time.sleep(0.2)

    # An entry script that cannot import, or whose init() raises: Failed with the reason; others unaffected
    broken = deploy(api, backend, hosted, "broken", script=b"import no_such_module\n")
    assert broken["state"] == "Failed" and "No module named 'no_such_module'" in broken["error"], broken
    failing = deploy(api, backend, hosted, "failing", script=b"def init():\n    raise RuntimeError('no GPU')\n\n\ndef run(raw):\n    return 1\n")
    assert failing["state"] == "Failed" and "RuntimeError: no GPU" in failing["error"]
    assert "no GPU" in api.ok("GET", f"{ENDPOINTS}/calc/deployments/failing/logs")["logs"]
    code, error = api.call("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": {"blue": 50, "failing": 50}})
    assert code == 409 and error["field"] == "traffic.failing"
    assert score(api, {"data": [1]}, key=key)[:2] == (200, [2])


def test_telemetry_counts_requests_errors_and_latency(api, backend, hosted, local):
    deploy(api, backend, hosted, "blue")
    key = api.ok("GET", f"{ENDPOINTS}/calc/keys")["primary_key"]
    for _ in range(9):
        score(api, {"data": [1]}, key=key)
    score(api, {"fail": True}, key=key)
    deadline = time.monotonic() + 20
    while True:  # hosts flush every few seconds
        summary = api.ok("GET", f"{ENDPOINTS}/calc/telemetry?minutes=5")
        if summary["requests"] == 10:
            break
        assert time.monotonic() < deadline, summary
        time.sleep(0.5)
    assert summary["errors"] == 1 and 0 < summary["p50_ms"] <= summary["p95_ms"]
    assert summary["deployments"]["blue"]["requests"] == 10


def test_hosts_come_back_after_a_restart(api, backend, hosted, settings, local):
    deploy(api, backend, hosted, "blue")
    key = api.ok("GET", f"{ENDPOINTS}/calc/keys")["primary_key"]
    hosted.host.stop()

    from chalicelib.hosting.local_hosts import LocalHosts

    hosted.host = LocalHosts(settings.home, hosted.ctx.blobs, hosted.ctx.table,
                             on_state=lambda *report: hosted.deployments.record_state(*report))
    hosted.host.start()
    deadline = time.monotonic() + 30
    while score(api, {"data": [1]}, key=key)[0] != 200:
        assert time.monotonic() < deadline, "the deployment was not restarted"
        time.sleep(0.2)
    assert score(api, {"data": [3]}, key=key)[:2] == (200, [6])


def test_a_new_endpoint_whose_first_deployment_fails_reports_it(api, backend, hosted, local):
    failed = deploy(api, backend, hosted, "blue", script=b"import no_such_module\n")
    assert failed["state"] == "Failed" and "no_such_module" in failed["error"]
    code, error, _ = score(api, {"data": [1]})
    assert code == 503 and "no running scoring host" in error["message"], error
    # Deploying a fixed script over it heals the endpoint
    assert deploy(api, backend, hosted, "blue")["state"] == "Succeeded"
    assert score(api, {"data": [1]})[:2] == (200, [2])


def test_a_host_left_running_by_a_killed_platform_is_replaced(api, backend, hosted, settings, local):
    import psutil

    from chalicelib.hosting.local_hosts import LocalHosts

    deploy(api, backend, hosted, "blue")
    key = api.ok("GET", f"{ENDPOINTS}/calc/keys")["primary_key"]
    killed = hosted.host  # its platform "dies": its supervisor stops, its host is left running
    killed.stopped.set()
    killed.monitor.join(5)
    orphan = killed.hosts[("ws", "calc", "blue")].process.pid
    hosted.host = LocalHosts(settings.home, hosted.ctx.blobs, hosted.ctx.table,
                             on_state=lambda *report: hosted.deployments.record_state(*report))
    hosted.host.start()
    try:
        deadline = time.monotonic() + 30
        while score(api, {"data": [1]}, key=key)[0] != 200:
            assert time.monotonic() < deadline, "the deployment was not restarted"
            time.sleep(0.2)
        assert hosted.host.hosts[("ws", "calc", "blue")].process.pid != orphan
        assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    finally:
        killed.spawner.close()


# --- environments ---------------------------------------------------------------------------------
ENVIRONMENT_PY = b'''import os, sys
import nimbus_tiny

def init():
    pass

def run(raw_data):
    return {"greeting": nimbus_tiny.GREETING + os.environ["SUFFIX"], "prefix": sys.prefix, "pid": os.getpid()}
'''


def test_a_deployment_scores_in_its_environment_and_pins_it(api, backend, hosted, local, settings, tmp_path):
    from tests.wheels import TINY_GREETING, build_tiny_wheel

    # Given an environment whose package exists only as a local wheel, with a variable
    wheels = build_tiny_wheel(tmp_path / "wheels").parent
    tiny = api.ok("POST", f"{WS}/environments/tiny/versions",
                  {"pip": ["--no-index", f"--find-links {wheels}", "nimbus-tiny==0.1"], "variables": {"SUFFIX": "!"}})

    # When a deployment names it (by name: the latest version)
    deployed = deploy(api, backend, hosted, "blue", script=ENVIRONMENT_PY, environment="tiny")

    # Then it is pinned to the version, which can no longer change, and scores in the environment's venv
    assert deployed["state"] == "Succeeded" and deployed["environment"] == "tiny:1", deployed
    assert api.ok("GET", f"{WS}/environments/tiny/versions/1")["used"] is True
    code, error = api.call("PUT", f"{WS}/environments/tiny/versions/1", {"pip": []})
    assert code == 409 and error["field"] == "version"
    venv = settings.home / "envs" / tiny["hash"]
    code, answer, _ = score(api, {})
    assert code == 200 and answer["greeting"] == TINY_GREETING + "!" and answer["prefix"] == str(venv), answer

    # And a host that dies comes back in the same environment
    import os
    import signal

    os.kill(answer["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (again := score(api, {}))[0] != 200 or again[1]["pid"] == answer["pid"]:
        assert time.monotonic() < deadline, "the host did not come back"
        time.sleep(0.2)
    assert again[1]["prefix"] == str(venv)


def test_a_deployment_whose_environment_cannot_be_built_fails_with_the_build_log(api, backend, hosted, local,
                                                                                   tmp_path):
    wheels = tmp_path / "empty-index"
    wheels.mkdir()
    api.ok("POST", f"{WS}/environments/broken/versions",
           {"pip": ["--no-index", f"--find-links {wheels}", "nimbus-absent==1.0"]})
    failed = deploy(api, backend, hosted, "blue", script=ENVIRONMENT_PY, environment="broken:1")
    assert failed["state"] == "Failed" and "environment broken:1" in failed["error"], failed
    assert "nimbus-absent" in failed["error"] and "build.log" in failed["error"]

    api.ok("POST", f"{WS}/environments/old/versions", {"python": "3.9"})
    other = deploy(api, backend, hosted, "green", script=ENVIRONMENT_PY, environment="old")
    assert other["state"] == "Failed" and "Python 3.9" in other["error"], other


def test_an_environment_on_a_stage_that_builds_no_images_is_refused_on_aws(api, backend, hosted):
    if backend != "aws":
        pytest.skip("locally the environment is built when the deployment starts")
    api.ok("POST", f"{WS}/environments/tiny/versions", {"pip": ["numpy"]})
    code, error = api.call("PUT", f"{ENDPOINTS}/calc/deployments/blue",
                           {"models": ["doubler:1"], "snapshot_id": snapshot(api, backend, hosted, {"score.py": SCORE_PY}),
                            "entry_script": "score.py", "environment": "tiny:1"})
    assert code == 400 and error["field"] == "environment" and "NIMBUS_CODEBUILD_PROJECT" in error["message"], error
    assert api.ok("GET", f"{WS}/environments/tiny/versions/1")["used"] is False


def test_on_aws_a_deployment_in_an_environment_is_an_image_function_and_package_types_do_not_mix(
        api, backend, hosted, monkeypatch):
    if backend != "aws":
        pytest.skip("Lambda functions are AWS's")
    import boto3

    from chalicelib.compute.image_build import IMAGE_FORMAT
    from chalicelib.domain import table_keys

    # Given a stage that builds images, and an environment whose image has been built
    monkeypatch.setattr(hosted.ctx, "settings", dataclasses.replace(hosted.ctx.settings, codebuild_project="images"))
    tiny = api.ok("POST", f"{WS}/environments/tiny/versions", {"pip": ["numpy"]})
    snap = snapshot(api, backend, hosted, {"score.py": SCORE_PY})
    body = {"models": ["doubler:1"], "snapshot_id": snap, "entry_script": "score.py", "environment": "tiny"}
    code, error = api.call("PUT", f"{ENDPOINTS}/calc/deployments/blue", body)
    assert code == 409 and error["field"] == "environment" and "no built image" in error["message"], error
    image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/nimbus/ws:{tiny['hash']}-{IMAGE_FORMAT}"
    key = table_keys.environment_build(tiny["hash"], table_keys.IMAGE_BUILD_KIND + "ws")
    hosted.ctx.table.put({"pk": key.pk, "sk": key.sk, "state": "Succeeded", "format": IMAGE_FORMAT,
                          "image_uri": image})

    # When a deployment names it, then Then its version of the endpoint's function runs the image
    deployed = api.ok("PUT", f"{ENDPOINTS}/calc/deployments/blue", body)
    assert deployed["state"] == "Succeeded" and deployed["environment"] == "tiny:1", deployed
    function = boto3.client("lambda", region_name="us-east-1").get_function(
        FunctionName=deployed["host"]["function_name"])
    assert function["Configuration"]["PackageType"] == "Image"
    assert function["Code"]["ImageUri"] == image

    # And a deployment without an environment cannot join that endpoint: 409, nothing written
    code, error = api.call("PUT", f"{ENDPOINTS}/calc/deployments/green", {**body, "environment": None})
    assert code == 409 and error["field"] == "environment" and "package type" in error["message"], error
    assert api.call("GET", f"{ENDPOINTS}/calc/deployments/green")[0] == 404
    assert [d["name"] for d in api.ok("GET", f"{ENDPOINTS}/calc")["deployments"]] == ["blue"]


def test_a_caller_without_the_endpoints_key_is_refused_before_its_content_type_is_judged(api, backend, hosted):
    deploy(api, backend, hosted, "blue")
    form = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
    path = f"{ENDPOINTS}/calc/score"
    assert api.client.http.post(path, body="{}", headers=form).status_code == 401
    assert api.client.http.post(path, body="{}", headers={**form, "Authorization": "Bearer wrong"}).status_code == 401
    key = api.ok("GET", f"{ENDPOINTS}/calc/keys")["primary_key"]
    known = api.client.http.post(path, body="{}", headers={**form, "Authorization": f"Bearer {key}"})
    assert known.status_code == 415 and json.loads(known.body)["code"] == "UnsupportedMediaType"
