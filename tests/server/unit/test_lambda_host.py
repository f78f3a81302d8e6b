"""LambdaHost against moto's Lambda (no docker: functions are stored, never run).

What moto proves here: functions, published versions, the alias and its RoutingConfig, reserved
concurrency, deletions, log reading. What it cannot: invoke only echoes the event (the handler's answer
is tested with real response dicts through parse_response), put_provisioned_concurrency_config is
not implemented (the request the host sends is recorded and compared with the plan instead), and its
functions are Active at once (a client that reports Pending or InProgress shows the rollout waiting).
"""
from __future__ import annotations

import dataclasses
import io
import json
import time
import zipfile
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError

from chalicelib.errors import Conflict, Invalid, NimbusError, Unavailable
from chalicelib.hosting import lambda_package as pkg
from chalicelib.hosting.lambda_calls import translated
from chalicelib.hosting.lambda_host import LambdaHost
from chalicelib.hosting.lambda_invoke import parse_response
from chalicelib.hosting.port import (
    DeploymentConfig, DeploymentEnvironment, DeploymentSpec, EndpointTarget, ModelFiles, SourceFile,
)
from chalicelib.settings import Settings
from chalicelib.store.factory import build_blobs

ROLE_NAME = "nimbus-test-scoring"
TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                  "Principal": {"Service": "lambda.amazonaws.com"}}]}


@pytest.fixture
def aws(aws_env, tmp_path):
    import boto3

    # The role's name only, as the stage config gives it; the host completes the ARN.
    settings = Settings(backend="aws", home=tmp_path, table_name="nimbus-test", bucket="nimbus-test",
                        scoring_role_arn=ROLE_NAME)
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=settings.bucket)
    boto3.client("iam", region_name="us-east-1").create_role(RoleName=ROLE_NAME,
                                                             AssumeRolePolicyDocument=json.dumps(TRUST))
    blobs = build_blobs(settings)
    blobs.put_bytes("workspaces/team-1/snapshots/content/aa", b"def init():\n    pass\n\ndef run(raw):\n    return 1\n")
    host = LambdaHost(settings, blobs)
    return host, boto3.client("lambda", region_name="us-east-1"), blobs


def spec(deployment="blue", revision=1, **config) -> DeploymentSpec:
    return DeploymentSpec(
        workspace="team", endpoint="iris", deployment=deployment, revision=revision,
        models=(ModelFiles("iris", 1, "model.pkl", "workspaces/team-1/models/iris/1/", (("model.pkl", 10),)),),
        source=(SourceFile("score.py", "workspaces/team-1/snapshots/content/aa", 52),),
        entry_script="score.py", environment=None, config=DeploymentConfig(**config),
    )


def alias(client, host):
    return client.get_alias(FunctionName=host.function_name("team", "iris"), Name="live")


def versions(client, host):
    listed = client.list_versions_by_function(FunctionName=host.function_name("team", "iris"))["Versions"]
    return sorted(v["Version"] for v in listed if v["Version"] != "$LATEST")


def test_first_deployment_creates_function_version_and_alias(aws):
    host, client, blobs = aws
    state = host.deploy(spec(), None)

    name = host.function_name("team", "iris")
    assert state.state == "Succeeded" and state.error is None and state.rollout is None
    assert state.details == {"function_name": name, "function_version": "1", "alias": "live",
                             "code_sha256": state.details["code_sha256"]}
    config = client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert config["Role"] == f"arn:aws:iam::123456789012:role/{ROLE_NAME}"
    assert config["Handler"] == "chalicelib.scoring.lambda_handler.handler" and config["Runtime"] == "python3.11"
    assert config["Timeout"] == 60 + pkg.TIMEOUT_MARGIN_S and config["MemorySize"] == 1024
    assert config["Environment"]["Variables"]["NIMBUS_DEPLOYMENT"] == "blue"
    assert config["CodeSha256"] == state.details["code_sha256"]
    assert alias(client, host)["FunctionVersion"] == "1"
    # The package was staged in the bucket for Lambda to copy, then removed.
    assert list(blobs.list_all("lambda-packages/")) == []

    code = client.get_function(FunctionName=name, Qualifier="1")
    assert code["Tags"]["nimbus:endpoint"] == "iris"


def test_the_package_holds_runtime_and_source(aws):
    host, _, blobs = aws
    archive = host.build_zip(pkg.package_manifest(spec(), pkg.runtime_entries()))
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        names = zipped.namelist()
        assert zipped.read("source/score.py").startswith(b"def init()")
    assert "chalicelib/hosting/port.py" in names and "aws_lambda_powertools/__init__.py" in names
    # Same input, same bytes: redeploying unchanged code gives the same CodeSha256.
    assert host.build_zip(pkg.package_manifest(spec(), pkg.runtime_entries())) == archive


def test_second_deployment_publishes_version_two_without_traffic(aws):
    host, client, _ = aws
    host.deploy(spec("blue"), None)
    green = host.deploy(spec("green"), None)
    assert green.details["function_version"] == "2"
    assert versions(client, host) == ["1", "2"]
    current = alias(client, host)
    assert current["FunctionVersion"] == "1" and not current.get("RoutingConfig", {}).get("AdditionalVersionWeights")


def test_traffic_split_sets_the_alias_routing(aws):
    host, client, _ = aws
    details = {"blue": host.deploy(spec("blue"), None).details, "green": host.deploy(spec("green"), None).details}

    host.set_traffic("team", "iris", {"blue": 90, "green": 10}, details)
    current = alias(client, host)
    assert current["FunctionVersion"] == "1" and current["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}

    host.set_traffic("team", "iris", {"blue": 0, "green": 100}, details)
    current = alias(client, host)
    assert current["FunctionVersion"] == "2" and not current.get("RoutingConfig", {}).get("AdditionalVersionWeights")

    details["red"] = host.deploy(spec("red"), None).details
    with pytest.raises(Invalid, match="at most two"):
        host.set_traffic("team", "iris", {"blue": 40, "green": 30, "red": 30}, details)


@pytest.mark.parametrize("updated, expected_alias", [
    ("blue", ("3", {"2": 0.2})),   # the primary is replaced
    ("green", ("1", {"3": 0.2})),  # the additional version is replaced
])
def test_updating_a_deployment_publishes_a_new_version_that_keeps_its_weight(aws, updated, expected_alias):
    # One update per test: moto numbers a new version len(versions) + 1, so after a deletion it would
    # reuse a number (Lambda never does).
    host, client, _ = aws
    details = {"blue": host.deploy(spec("blue"), None).details, "green": host.deploy(spec("green"), None).details}
    host.set_traffic("team", "iris", {"blue": 80, "green": 20}, details)

    state = host.deploy(spec(updated, revision=2, memory_mb=2048), details[updated])

    assert state.details["function_version"] == "3"
    current = alias(client, host)
    assert (current["FunctionVersion"], current["RoutingConfig"]["AdditionalVersionWeights"]) == expected_alias
    name = host.function_name("team", "iris")
    assert client.get_function_configuration(FunctionName=name, Qualifier="3")["MemorySize"] == 2048
    assert versions(client, host) == sorted(["3", "1" if updated == "green" else "2"])  # the old one is deleted


def test_redeploying_a_revision_leaves_one_routed_version(aws):
    # Lambda returns the existing version when nothing changed; moto publishes a new one. Either way the
    # alias follows the deployment and no stray version is left.
    host, client, _ = aws
    first = host.deploy(spec("blue"), None)
    again = host.deploy(spec("blue"), first.details)
    assert again.details["code_sha256"] == first.details["code_sha256"]
    assert versions(client, host) == [again.details["function_version"]]
    assert alias(client, host)["FunctionVersion"] == again.details["function_version"]


def test_reserved_concurrency_is_applied(aws):
    host, client, _ = aws
    host.deploy(spec(reserved_concurrency=7), None)
    name = host.function_name("team", "iris")
    assert client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 7


class Recording:
    """Passes every call to moto, except put_provisioned_concurrency_config, which moto lacks: recorded."""

    def __init__(self, client):
        self.client = client
        self.provisioned: list[dict] = []

    def put_provisioned_concurrency_config(self, **request):
        self.provisioned.append(request)
        return {"Status": "IN_PROGRESS"}

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_provisioned_concurrency_is_requested_on_the_alias(aws):
    host, client, blobs = aws
    # moto answers "Not yet implemented": the host does send the request, and says what failed; the new
    # version serves all the same (it is routed before concurrency is applied).
    failed = host.deploy(spec(provisioned_concurrency=3), None)
    assert failed.state == "Failed" and "provisioning concurrency" in failed.error
    assert failed.details["function_version"] == "1" and alias(client, host)["FunctionVersion"] == "1"

    recorder = Recording(client)
    recording_host = LambdaHost(host.settings, blobs, lambda_client=recorder)
    recording_host.deploy(spec("green", provisioned_concurrency=3), None)
    expected = pkg.plan_function(spec("green", provisioned_concurrency=3), table="nimbus-test", bucket="nimbus-test",
                                 role_arn=host.role_arn()).put_provisioned_concurrency_config()
    assert recorder.provisioned == [expected]
    assert expected == {"FunctionName": host.function_name("team", "iris"), "Qualifier": "live",
                        "ProvisionedConcurrentExecutions": 3}


def test_remove_and_remove_endpoint_are_idempotent(aws):
    host, client, _ = aws
    blue = host.deploy(spec("blue"), None).details
    green = host.deploy(spec("green"), None).details

    host.remove("team", "iris", "green", green)
    host.remove("team", "iris", "green", green)
    assert versions(client, host) == ["1"]

    # The last deployment takes the alias with it (Lambda keeps a version an alias routes to).
    host.remove("team", "iris", "blue", blue)
    assert versions(client, host) == []
    with pytest.raises(ClientError):
        alias(client, host)

    host.remove_endpoint("team", "iris")
    host.remove_endpoint("team", "iris")
    with pytest.raises(ClientError):
        client.get_function(FunctionName=host.function_name("team", "iris"))
    host.remove("team", "iris", "blue", blue)  # nothing left: still fine


@pytest.mark.parametrize("kind", ["zip", "image"])
def test_a_concurrent_change_before_publishing_fails_the_rollout(aws, kind):
    host, client, _ = aws
    make = spec if kind == "zip" else image_spec
    host.deploy(make("blue"), None)
    # Another deployment's configuration landed after this deploy wrote its own: publishing now would
    # freeze the wrong settings into the version.
    other = pkg.plan_function(make("green"), table="nimbus-test", bucket="nimbus-test", role_arn=host.role_arn())
    sha = client.get_function_configuration(FunctionName=other.function_name)["CodeSha256"]
    rollout = {"step": "publish", "plan": dataclasses.asdict(other), "code": {}, "staged": None, "code_sha256": sha,
               "create": False, "version": None, "previous": {}}
    state = host.advance(rollout)
    assert state.state == "Failed" and "another deployment" in state.error
    assert versions(client, host) == ["1"]


def test_invoke_sends_a_v2_event_to_the_alias(aws):
    host, client, blobs = aws
    details = {"blue": host.deploy(spec("blue"), None).details}
    sent = []

    class Spy(Recording):
        def invoke(self, **request):
            sent.append(request)
            return self.client.invoke(**request)

    spying = LambdaHost(host.settings, blobs, lambda_client=Spy(client))
    target = EndpointTarget("team", "iris", {"blue": 100}, details)
    result = spying.invoke(target, b'{"data": [[1, 2]]}', "application/json")

    (request,) = sent
    assert request["FunctionName"] == host.function_name("team", "iris") and request["Qualifier"] == "live"
    event = json.loads(request["Payload"])
    assert event["version"] == "2.0" and event["body"] == '{"data": [[1, 2]]}'
    # moto echoes the event instead of running the handler: not an HTTP answer, so a 502 says so.
    assert result.status == 502 and b"no HTTP response" in result.body


def test_invoke_without_traffic_or_function(aws):
    host, client, blobs = aws
    assert host.invoke(EndpointTarget("team", "iris", {"blue": 0}, {}), b"{}", "application/json").status == 503

    class Missing(Recording):  # moto's invoke answers 200 even for a function that does not exist
        def invoke(self, **request):
            raise ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "Function not found"}},
                              "Invoke")

    missing = LambdaHost(host.settings, blobs, lambda_client=Missing(client))
    with pytest.raises(Unavailable, match="no scoring function"):
        missing.invoke(EndpointTarget("team", "iris", {"blue": 100}, {"blue": {"function_version": "1"}}), b"{}",
                       "application/json")


def test_invoke_names_the_deployment_that_served(aws):
    host, client, blobs = aws
    answer = {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "[0]"}

    class Served(Recording):
        def invoke(self, **request):
            return {"StatusCode": 200, "ExecutedVersion": "2", "Payload": io.BytesIO(json.dumps(answer).encode())}

    served = LambdaHost(host.settings, blobs, lambda_client=Served(client))
    details = {"blue": {"function_version": "1"}, "green": {"function_version": "2"}}
    result = served.invoke(EndpointTarget("team", "iris", {"blue": 50, "green": 50}, details), b"{}",
                           "application/json")
    assert (result.status, result.body, result.deployment) == (200, b"[0]", "green")
    too_big = served.invoke(EndpointTarget("team", "iris", {"blue": 100}, details), b"x" * (6 * 1024 * 1024),
                            "text/plain")
    assert too_big.status == 413 and json.loads(too_big.body)["code"] == "PayloadTooLarge"


def test_handler_answers_are_parsed():
    answer = {"statusCode": 200, "headers": {"Content-Type": "application/json", "X-Nimbus-Deployment": "green"},
              "body": "[1]", "isBase64Encoded": False}
    result = parse_response(None, json.dumps(answer).encode(), "blue")
    assert (result.status, result.body, result.deployment) == (200, b"[1]", "blue")
    assert parse_response(None, json.dumps(answer).encode(), None).deployment == "green"
    failed = parse_response("Unhandled", json.dumps({"errorType": "MemoryError", "errorMessage": "boom"}).encode(), "b")
    assert failed.status == 502 and json.loads(failed.body) == {
        "code": "ScoringFunctionError", "message": "the scoring function failed: MemoryError: boom"}
    encoded = parse_response(None, json.dumps({"statusCode": 500, "body": "eyJ9", "isBase64Encoded": True}).encode(),
                             "b")
    assert encoded.status == 500 and encoded.body == b'{"}'


def test_logs_read_only_the_versions_streams(aws):
    import boto3

    host, _, _ = aws
    logs = boto3.client("logs", region_name="us-east-1")
    group = f"/aws/lambda/{host.function_name('team', 'iris')}"
    assert host.logs("team", "iris", "blue", {"function_version": "1"}, 10) == ""
    logs.create_log_group(logGroupName=group)
    now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    for stream, lines in {"2026/11/25/[1]aaa": ["START", "one", "two\n", "END"],
                          "2026/11/25/[2]bbb": ["other version"]}.items():
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)])

    assert host.logs("team", "iris", "blue", {"function_version": "1"}, 3) == "one\ntwo\nEND"
    assert host.logs("team", "iris", "green", {"function_version": "2"}, 10) == "other version"
    assert host.logs("team", "iris", "red", {"function_version": "9"}, 10) == ""


@pytest.mark.parametrize("code, error", [
    ("TooManyRequestsException", Unavailable), ("ServiceException", Unavailable),
    ("ResourceConflictException", Conflict), ("InvalidParameterValueException", Invalid),
    ("AccessDeniedException", NimbusError),
])
def test_aws_errors_become_domain_errors(code, error):
    with pytest.raises(error) as caught:
        with translated("updating function f"):
            raise ClientError({"Error": {"Code": code, "Message": "m"}}, "UpdateFunctionCode")
    assert "updating function f" in caught.value.message


# --- image functions: deployments that name an environment ----------------------------------------


def pushed_image(tag: str) -> str:
    """An image in moto's ECR, as the environment's build leaves it (moto's Lambda does not check it)."""
    import boto3

    ecr = boto3.client("ecr", region_name="us-east-1")
    try:
        ecr.create_repository(repositoryName="nimbus-team", imageTagMutability="IMMUTABLE")
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"digest": f"sha256:{tag}"}, "layers": []}
    try:
        ecr.put_image(repositoryName="nimbus-team", imageManifest=json.dumps(manifest), imageTag=tag)
    except ecr.exceptions.ImageAlreadyExistsException:
        pass
    uri = ecr.describe_repositories(repositoryNames=["nimbus-team"])["repositories"][0]["repositoryUri"]
    return f"{uri}:{tag}"


def image_spec(deployment="blue", revision=1, tag="a" * 64, **config) -> DeploymentSpec:
    definition = {"python": "3.11", "pip": ["scikit-learn"], "variables": {"KEY": "-----BEGIN-----\nx"},
                  "base_image": "python:3.11-slim"}
    environment = DeploymentEnvironment("sklearn:1", tag, definition, pushed_image(tag))
    return replace(spec(deployment, revision, **config), environment=environment)


def manifest_of(blobs, key: str) -> dict:
    return json.loads(blobs.get_bytes(key))


def test_an_image_deployment_creates_an_image_function_with_its_source_manifest(aws):
    host, client, blobs = aws
    state = host.deploy(image_spec(), None)

    name = host.function_name("team", "iris")
    details = state.details
    assert state.state == "Succeeded" and details["function_version"] == "1" and details["alias"] == "live"
    assert details["package_type"] == "Image" and details["image_uri"] == image_spec().environment.image_uri
    assert details["source_manifest"] == f"lambda-sources/{name}/blue/1.json"
    config = client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert config["PackageType"] == "Image" and not config.get("Handler") and not config.get("Runtime")
    assert config["ImageConfigResponse"]["ImageConfig"] == {
        "EntryPoint": ["python", "-m", "awslambdaric"], "Command": ["chalicelib.scoring.lambda_handler.handler"],
        "WorkingDirectory": "/tmp"}
    variables = config["Environment"]["Variables"]
    assert variables["NIMBUS_SOURCE_MANIFEST"] == details["source_manifest"]
    assert variables["KEY"] == "-----BEGIN-----\nx"  # a line break: not an ENV line of the image
    assert config["CodeSha256"] == details["code_sha256"]
    assert client.get_function(FunctionName=name, Qualifier="1")["Code"]["ImageUri"] == details["image_uri"]
    assert alias(client, host)["FunctionVersion"] == "1"
    # The handler finds the source folder through the manifest; no zip was staged.
    assert manifest_of(blobs, details["source_manifest"]) == {
        "files": [["score.py", "workspaces/team-1/snapshots/content/aa", 52]]}
    assert list(blobs.list_all("lambda-packages/")) == []


def test_updating_an_image_deployment_swaps_image_version_and_manifest(aws):
    host, client, blobs = aws
    details = {"blue": host.deploy(image_spec("blue"), None).details,
               "green": host.deploy(image_spec("green"), None).details}
    host.set_traffic("team", "iris", {"blue": 80, "green": 20}, details)

    updated = host.deploy(image_spec("blue", revision=2, tag="b" * 64), details["blue"]).details

    name = host.function_name("team", "iris")
    assert updated["function_version"] == "3"
    current = alias(client, host)
    assert (current["FunctionVersion"], current["RoutingConfig"]["AdditionalVersionWeights"]) == ("3", {"2": 0.2})
    # (moto answers every version's Code with the function's latest image, so only the new one is checked)
    assert client.get_function(FunctionName=name, Qualifier="3")["Code"]["ImageUri"].endswith(":" + "b" * 64)
    assert versions(client, host) == ["2", "3"]
    # The replaced version's manifest went with it; the others stay while their versions exist.
    kept = sorted(b.key for b in blobs.list_all("lambda-sources/"))
    assert kept == sorted([updated["source_manifest"], details["green"]["source_manifest"]])
    assert updated["source_manifest"].endswith("/blue/2.json")

    host.remove("team", "iris", "green", details["green"])
    assert [b.key for b in blobs.list_all("lambda-sources/")] == [updated["source_manifest"]]
    host.remove_endpoint("team", "iris")
    assert list(blobs.list_all("lambda-sources/")) == []


def test_an_endpoint_keeps_the_package_type_of_its_function(aws):
    host, client, blobs = aws
    host.deploy(spec("blue"), None)
    # Given a zip function, an image deployment of the same endpoint is refused before anything is written
    with pytest.raises(Conflict, match="cannot change a function's package type") as caught:
        host.deploy(image_spec("green"), None)
    assert caught.value.field == "environment" and "another endpoint" in caught.value.message
    assert versions(client, host) == ["1"] and list(blobs.list_all("lambda-sources/")) == []
    name = host.function_name("team", "iris")
    assert client.get_function_configuration(FunctionName=name)["PackageType"] == "Zip"

    # And the other way round on an endpoint whose function runs an image
    image_host_spec = replace(image_spec("blue"), endpoint="images")
    host.deploy(image_host_spec, None)
    with pytest.raises(Conflict, match="zip function") as caught:
        host.deploy(replace(spec("green"), endpoint="images"), None)
    assert caught.value.field == "environment"


def test_an_image_deployment_that_fails_leaves_no_manifest(aws):
    host, client, blobs = aws

    class Failing(Recording):  # Lambda answers that the new code could not be used
        def get_function_configuration(self, **request):
            answer = self.client.get_function_configuration(**request)
            return {**answer, "State": "Failed", "StateReason": "image not found"}

    failing = LambdaHost(host.settings, blobs, lambda_client=Failing(client))
    state = failing.deploy(image_spec(), None)
    assert state.state == "Failed" and "image not found" in state.error
    assert list(blobs.list_all("lambda-sources/")) == []
    failing.remove("team", "iris", "blue", state.details)  # no version: nothing else to remove


# --- a rollout never waits: what Lambda is not ready for is left for the next look ------------------------
class Busy(Recording):
    """moto's Lambda, except that reads of the function (not of a version) show the next of `shown` while
    there are any: the State or LastUpdateStatus Lambda reports while it applies a change."""

    def __init__(self, client, *shown: dict):
        super().__init__(client)
        self.shown = list(shown)
        self.reads = 0

    def get_function_configuration(self, **request):
        answer = self.client.get_function_configuration(**request)
        self.reads += 1
        if "Qualifier" not in request and self.shown:
            answer = {**answer, **self.shown.pop(0)}
        return answer


PENDING, UPDATING = {"State": "Pending"}, {"LastUpdateStatus": "InProgress"}


def test_a_new_function_still_pending_is_published_by_a_later_look(aws):
    host, client, blobs = aws
    busy = Busy(client, PENDING, PENDING)
    pending_host = LambdaHost(host.settings, blobs, lambda_client=busy)

    # Given a function Lambda still creates, the deploy answers at once: created, not published
    started = pending_host.deploy(spec(), None)
    assert (started.state, started.rollout["step"]) == ("InProgress", "publish"), started
    assert busy.reads == 1 and versions(client, host) == []  # one look after creating it, no polling
    assert list(blobs.list_all("lambda-packages/")) == []  # Lambda has its copy of the code

    # When it is looked at again, it goes on only once the function is Active
    again = pending_host.advance(started.rollout)
    assert again.state == "InProgress" and again.rollout["step"] == "publish" and versions(client, host) == []
    done = pending_host.advance(again.rollout)
    assert done.state == "Succeeded" and done.details["function_version"] == "1"
    assert versions(client, host) == ["1"] and alias(client, host)["FunctionVersion"] == "1"


def test_an_update_waits_for_each_change_and_fails_with_lambdas_reason(aws):
    host, client, blobs = aws
    blue = host.deploy(spec("blue"), None).details
    failed_update = {"LastUpdateStatus": "Failed", "LastUpdateStatusReason": "the code could not be unpacked"}
    busy = Busy(client, UPDATING, {}, UPDATING, failed_update)
    busy_host = LambdaHost(host.settings, blobs, lambda_client=busy)

    # Given an earlier change still being applied: the new code waits, staged in the bucket
    started = busy_host.deploy(spec("blue", revision=2, memory_mb=2048), blue)
    assert (started.state, started.rollout["step"]) == ("InProgress", "write")
    assert len(list(blobs.list_all("lambda-packages/"))) == 1

    # Then the code is written, and the configuration waits until Lambda has applied the code
    written = busy_host.advance(started.rollout)
    assert (written.state, written.rollout["step"]) == ("InProgress", "configure")
    assert list(blobs.list_all("lambda-packages/")) == []

    # And when Lambda reports that the update failed, the rollout fails with its reason; blue's version serves
    failed = busy_host.advance(written.rollout)
    assert failed.state == "Failed" and "the code could not be unpacked" in failed.error and failed.details == {}
    assert versions(client, host) == ["1"] and alias(client, host)["FunctionVersion"] == "1"


def test_a_throttled_step_is_taken_by_the_next_look(aws):
    host, client, blobs = aws

    class Throttled(Recording):
        throttled = 1

        def publish_version(self, **request):
            if self.throttled:
                self.throttled -= 1
                raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}},
                                  "PublishVersion")
            return self.client.publish_version(**request)

    throttled_host = LambdaHost(host.settings, blobs, lambda_client=Throttled(client))
    started = throttled_host.deploy(spec(), None)
    assert (started.state, started.rollout["step"]) == ("InProgress", "publish") and versions(client, host) == []
    done = throttled_host.advance(started.rollout)
    assert done.state == "Succeeded" and versions(client, host) == ["1"]


def test_abandoning_a_rollout_undoes_what_it_made(aws):
    host, client, blobs = aws
    blue = host.deploy(image_spec("blue"), None).details
    busy_host = LambdaHost(host.settings, blobs, lambda_client=Busy(client, {}, UPDATING))

    # Given an update whose code is written and whose configuration waits
    started = busy_host.deploy(image_spec("blue", revision=2, tag="c" * 64), blue)
    assert started.rollout["step"] == "configure"
    manifests = sorted(b.key for b in blobs.list_all("lambda-sources/"))
    assert manifests == sorted([blue["source_manifest"], started.rollout["plan"]["source_manifest"]])

    # When it is abandoned, its manifest goes; the serving revision's stays
    busy_host.abandon(started.rollout)
    busy_host.abandon(started.rollout)
    assert [b.key for b in blobs.list_all("lambda-sources/")] == [blue["source_manifest"]]
    assert versions(client, host) == ["1"]


def test_a_create_whose_answer_was_lost_goes_on_as_an_update(aws):
    host, client, blobs = aws

    class Lost(Recording):
        def create_function(self, **request):
            self.client.create_function(**request)
            raise ClientError({"Error": {"Code": "ServiceException", "Message": "connection reset"}}, "CreateFunction")

    lost = LambdaHost(host.settings, blobs, lambda_client=Lost(client))
    started = lost.deploy(spec(), None)
    assert (started.state, started.rollout["step"], started.rollout["create"]) == ("InProgress", "write", True)
    done = host.advance(started.rollout)  # the function exists: created again → Conflict → its code is updated
    assert done.state == "Succeeded" and versions(client, host) == ["1"]
