"""The pure plan of a deployment on Lambda: package manifest, names, request dicts, traffic weights."""
from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from chalicelib.errors import Invalid, NimbusError
from chalicelib.hosting import lambda_package as pkg
from chalicelib.hosting.lambda_invoke import score_event
from chalicelib.hosting.port import DeploymentConfig, DeploymentEnvironment, DeploymentSpec, ModelFiles, SourceFile

ROLE = "arn:aws:iam::123456789012:role/nimbus-test-scoring"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/nimbus-team:" + "c" * 64


def environment(**variables) -> DeploymentEnvironment:
    definition = {"python": "3.11", "pip": ["scikit-learn==1.5.0"], "variables": variables,
                  "base_image": "python:3.11-slim"}
    return DeploymentEnvironment("sklearn:2", "c" * 64, definition, IMAGE)


def make_spec(**changes) -> DeploymentSpec:
    spec = DeploymentSpec(
        workspace="team",
        endpoint="iris",
        deployment="blue",
        revision=3,
        models=(ModelFiles("iris", 2, "model.pkl", "workspaces/team-1/models/iris/2/", (("model.pkl", 1234),)),),
        source=(SourceFile("score.py", "workspaces/team-1/snapshots/content/aa", 120),
                SourceFile("lib/util.py", "workspaces/team-1/snapshots/content/bb", 40)),
        entry_script="score.py",
        environment=None,
        config=DeploymentConfig(memory_mb=2048, timeout_s=60, reserved_concurrency=5, provisioned_concurrency=2,
                                capture_rate=0.25),
        capture_prefix="workspaces/team-1/endpoints/iris/captures/blue/",
    )
    return replace(spec, **changes)


@pytest.fixture(scope="module")
def runtime():
    return pkg.runtime_entries()


# --- the package ------------------------------------------------------------------------------


def test_runtime_holds_only_python_sources_of_the_scoring_packages(runtime):
    names = [e.arcname for e in runtime]
    assert "chalicelib/__init__.py" in names and "chalicelib/hosting/port.py" in names
    assert "nimbus/__init__.py" in names
    assert "aws_lambda_powertools/metrics/__init__.py" in names and "typing_extensions.py" in names
    assert "chalicelib/scoring/lambda_handler.py" in names
    # The handler's JSON codec is compiled: the one extension module shipped, for Lambda's platform.
    assert [n for n in names if not n.endswith(".py")] == [n for n in names if n.startswith("orjson/")
                                                           and not n.endswith(".py")]
    assert any(n.startswith("orjson/orjson.cpython-311-x86_64-linux-gnu") for n in names)
    assert not [n for n in names if "__pycache__" in n or "/tests/" in n or n.startswith("tests/")]
    assert not [n for n in names if n.split("/")[0] not in ("chalicelib", "nimbus", "aws_lambda_powertools",
                                                           "typing_extensions.py", "orjson")]
    assert all(e.local_path and e.blob_key is None for e in runtime)


def test_manifest_adds_the_source_folder_from_blobs_sorted(runtime):
    manifest = pkg.package_manifest(make_spec(), runtime)
    names = [e.arcname for e in manifest]
    assert names == sorted(names)
    sources = {e.arcname: e for e in manifest if e.arcname.startswith("source/")}
    assert set(sources) == {"source/score.py", "source/lib/util.py"}
    assert sources["source/score.py"].blob_key == "workspaces/team-1/snapshots/content/aa"
    assert sources["source/score.py"].size == 120 and sources["source/score.py"].local_path is None
    # Models are not packaged: they stay in S3.
    assert not [n for n in names if n.endswith("model.pkl")]


def test_manifest_refuses_a_missing_entry_script_bad_paths_and_oversize(runtime):
    with pytest.raises(Invalid) as caught:
        pkg.package_manifest(make_spec(entry_script="main.py"), runtime)
    assert caught.value.field == "entry_script"
    for path in ("../evil.py", "/abs.py", "a//b.py", "a\\b.py"):
        bad = make_spec(source=(SourceFile(path, "k", 1), SourceFile("score.py", "k2", 1)))
        with pytest.raises(Invalid):
            pkg.package_manifest(bad, runtime)
    huge = make_spec(source=(SourceFile("score.py", "k", 1), SourceFile("data.bin", "k3", 250 * 1024 * 1024)))
    with pytest.raises(Invalid, match="unzipped"):
        pkg.package_manifest(huge, runtime)


# --- names ------------------------------------------------------------------------------------


def test_function_names_are_deterministic_valid_and_unique():
    name = pkg.function_name("nimbus-dev", "team", "iris")
    assert name == pkg.function_name("nimbus-dev", "team", "iris")
    assert re.fullmatch(r"nimbus-dev-score-team-iris-[0-9a-f]{8}", name)
    # Hyphens cannot make two identities collide: the hash covers the exact parts.
    assert pkg.function_name("nimbus-dev", "a-b", "c") != pkg.function_name("nimbus-dev", "a", "b-c")
    assert pkg.function_name("nimbus-prod", "team", "iris") != name
    long = pkg.function_name("nimbus-prod", "w" * 120 + ".x", "e" * 32)
    assert len(long) <= 64 and re.fullmatch(r"[A-Za-z0-9_-]+", long)
    assert long.startswith(pkg.function_prefix("nimbus-prod"))


# --- requests ---------------------------------------------------------------------------------


def plan(**changes):
    return pkg.plan_function(make_spec(**changes), table="nimbus-test", bucket="nimbus-test-bucket", role_arn=ROLE)


def test_create_function_request_is_exact():
    code = {"S3Bucket": "nimbus-test-bucket", "S3Key": "lambda-packages/f/abc.zip"}
    request = plan().create_function(code)
    name = pkg.function_name("nimbus-test", "team", "iris")
    env = request.pop("Environment")["Variables"]
    assert request == {
        "FunctionName": name, "Role": ROLE, "Handler": "chalicelib.scoring.lambda_handler.handler",
        "Runtime": "python3.11", "Timeout": 90, "MemorySize": 2048, "Description": "team/iris/blue revision 3",
        "Code": code, "Publish": False, "PackageType": "Zip",
        "Tags": {"nimbus:table": "nimbus-test", "nimbus:workspace": "team", "nimbus:endpoint": "iris"},
    }
    assert {k: v for k, v in env.items() if k != "NIMBUS_MODEL_SOURCES"} == {
        "NIMBUS_BACKEND": "aws", "NIMBUS_TABLE": "nimbus-test", "NIMBUS_BUCKET": "nimbus-test-bucket",
        "NIMBUS_ENDPOINT_WORKSPACE": "team", "NIMBUS_ENDPOINT": "iris", "NIMBUS_DEPLOYMENT": "blue",
        "NIMBUS_REVISION": "3", "NIMBUS_SOURCE_DIR": "/var/task/source", "NIMBUS_ENTRY_SCRIPT": "score.py",
        "NIMBUS_TIMEOUT_S": "60", "NIMBUS_CAPTURE_RATE": "0.25",
        "NIMBUS_CAPTURE_PREFIX": "workspaces/team-1/endpoints/iris/captures/blue/",
        "POWERTOOLS_SERVICE_NAME": "nimbus-scoring", "POWERTOOLS_METRICS_NAMESPACE": "Nimbus",
    }
    assert json.loads(env["NIMBUS_MODEL_SOURCES"]) == [
        {"name": "iris", "version": 2, "asset_path": "model.pkl", "bucket": "nimbus-test-bucket",
         "prefix": "workspaces/team-1/models/iris/2/", "files": [["model.pkl", 1234]]}
    ]


def test_update_publish_alias_and_concurrency_requests():
    p = plan()
    code = {"S3Bucket": "b", "S3Key": "k"}
    assert p.update_function_code(code) == {"FunctionName": p.function_name, "S3Bucket": "b", "S3Key": "k",
                                            "Publish": False}
    assert p.update_function_code(code, "rev-1")["RevisionId"] == "rev-1"
    configuration = p.update_function_configuration()
    assert "Code" not in configuration and "Tags" not in configuration
    assert configuration["Timeout"] == 90 and configuration["Environment"] == {"Variables": p.environment}
    assert p.publish_version("sha", "rev-2") == {"FunctionName": p.function_name, "CodeSha256": "sha",
                                                 "RevisionId": "rev-2", "Description": "team/iris/blue revision 3"}
    assert p.create_alias("4")["FunctionVersion"] == "4" and p.create_alias("4")["Name"] == "live"
    assert p.put_function_concurrency() == {"FunctionName": p.function_name, "ReservedConcurrentExecutions": 5}
    assert p.put_provisioned_concurrency_config() == {"FunctionName": p.function_name, "Qualifier": "live",
                                                      "ProvisionedConcurrentExecutions": 2}
    unset = plan(config=DeploymentConfig())
    assert unset.put_function_concurrency() is None and unset.put_provisioned_concurrency_config() is None


@pytest.mark.parametrize("config, field", [
    (DeploymentConfig(memory_mb=64), "config.memory_mb"),
    (DeploymentConfig(memory_mb=20000), "config.memory_mb"),
    (DeploymentConfig(timeout_s=0), "config.timeout_s"),
    (DeploymentConfig(timeout_s=899), "config.timeout_s"),
    (DeploymentConfig(reserved_concurrency=-1), "config.reserved_concurrency"),
    (DeploymentConfig(provisioned_concurrency=0), "config.provisioned_concurrency"),
    (DeploymentConfig(reserved_concurrency=2, provisioned_concurrency=3), "config.provisioned_concurrency"),
    (DeploymentConfig(capture_rate=1.5), "config.capture_rate"),
])
def test_bad_config_is_invalid(config, field):
    with pytest.raises(Invalid) as caught:
        plan(config=config)
    assert caught.value.field == field


def test_environment_over_four_kilobytes_is_refused():
    files = tuple((f"shard-{i:05d}.bin", 1000) for i in range(300))
    many = ModelFiles("big", 1, "big", "workspaces/team-1/models/big/1/", files)
    with pytest.raises(Invalid, match="4096") as caught:
        plan(models=(many,))
    assert caught.value.field == "models"


def test_a_missing_role_is_a_server_error():
    with pytest.raises(NimbusError, match="NIMBUS_SCORING_ROLE_ARN"):
        pkg.plan_function(make_spec(), table="t", bucket="b", role_arn="")


# --- traffic ----------------------------------------------------------------------------------


def test_alias_routing_puts_the_heaviest_deployment_first():
    versions = {"blue": "1", "green": "2", "red": "3"}
    assert pkg.alias_routing({"blue": 100, "green": 0}, versions) == ("1", {})
    assert pkg.alias_routing({"blue": 10, "green": 90, "red": 0}, versions) == ("2", {"1": 0.1})
    assert pkg.alias_routing({"blue": 50, "green": 50}, versions) == ("1", {"2": 0.5})
    assert pkg.update_alias("fn", {"blue": 75, "green": 25}, versions) == {
        "FunctionName": "fn", "Name": "live", "FunctionVersion": "1",
        "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.25}},
    }


def test_alias_routing_allows_two_weighted_deployments_at_most():
    versions = {"blue": "1", "green": "2", "red": "3"}
    with pytest.raises(Invalid, match="at most two") as caught:
        pkg.alias_routing({"blue": 40, "green": 30, "red": 30}, versions)
    assert caught.value.field == "traffic"
    with pytest.raises(Invalid, match="no published"):
        pkg.alias_routing({"blue": 50, "green": 50}, {"blue": "1"})
    with pytest.raises(Invalid):
        pkg.alias_routing({"blue": 0}, versions)


def test_score_event_is_an_http_api_v2_event():
    event = score_event(b'{"data": [1]}', "application/json", "req-1", 1700000000000)
    assert event["version"] == "2.0" and event["routeKey"] == "POST /score"
    assert event["requestContext"]["http"]["method"] == "POST" and event["requestContext"]["requestId"] == "req-1"
    assert event["body"] == '{"data": [1]}' and event["isBase64Encoded"] is False
    binary = score_event(b"\xff\x00", "application/octet-stream", "req-2", 0)
    assert binary["isBase64Encoded"] is True and binary["body"] == "/wA="


def test_autoscale_bounds_become_concurrency_unless_given():
    assert (pkg.reserved_concurrency(DeploymentConfig()), pkg.provisioned_concurrency(DeploymentConfig())) == \
        (None, None)  # scale to zero, no cap
    bounded = DeploymentConfig(min_instances=2, max_instances=10)
    assert (pkg.reserved_concurrency(bounded), pkg.provisioned_concurrency(bounded)) == (10, 2)
    explicit = DeploymentConfig(min_instances=2, max_instances=10, reserved_concurrency=50, provisioned_concurrency=5)
    assert (pkg.reserved_concurrency(explicit), pkg.provisioned_concurrency(explicit)) == (50, 5)


# --- image functions (deployments that name an environment) ---------------------------------------


def test_an_image_function_runs_the_environment_image_with_the_runtime_interface_client():
    p = plan(environment=environment(GREETING="hello"))
    name = pkg.function_name("nimbus-test", "team", "iris")
    assert p.package_type == "Image" and p.image_code() == {"ImageUri": IMAGE}
    assert p.source_manifest == f"lambda-sources/{name}/blue/3.json"
    request = p.create_function(p.image_code())
    env = request.pop("Environment")["Variables"]
    assert request == {
        "FunctionName": name, "Role": ROLE, "Timeout": 90, "MemorySize": 2048,
        "Description": "team/iris/blue revision 3", "Code": {"ImageUri": IMAGE}, "Publish": False,
        "PackageType": "Image",
        "ImageConfig": {"EntryPoint": ["python", "-m", "awslambdaric"],
                        "Command": ["chalicelib.scoring.lambda_handler.handler"], "WorkingDirectory": "/tmp"},
        "Tags": {"nimbus:table": "nimbus-test", "nimbus:workspace": "team", "nimbus:endpoint": "iris"},
    }
    # The source folder comes from the manifest into /tmp; one-line variables are ENV lines of the image.
    assert env["NIMBUS_SOURCE_MANIFEST"] == p.source_manifest and env["NIMBUS_SOURCE_DIR"] == "/tmp/nimbus-source"
    assert env["NIMBUS_BUCKET"] == "nimbus-test-bucket" and "GREETING" not in env
    assert p.update_function_code(p.image_code()) == {"FunctionName": name, "ImageUri": IMAGE, "Publish": False}
    configuration = p.update_function_configuration()
    assert configuration["ImageConfig"] == request["ImageConfig"]
    assert not {"Handler", "Runtime", "Code", "PackageType"} & set(configuration)
    # A deployment without an environment stays a zip function.
    zipped = plan()
    assert zipped.package_type == "Zip" and zipped.source_manifest is None
    assert "NIMBUS_SOURCE_MANIFEST" not in zipped.environment and "ImageConfig" not in zipped.create_function({})
    with pytest.raises(NimbusError):
        zipped.image_code()


def test_the_source_manifest_lists_path_blob_and_size_sorted():
    manifest = json.loads(pkg.source_manifest(make_spec(environment=environment())))
    assert manifest == {"files": [["lib/util.py", "workspaces/team-1/snapshots/content/bb", 40],
                                  ["score.py", "workspaces/team-1/snapshots/content/aa", 120]]}
    with pytest.raises(Invalid) as caught:
        pkg.source_manifest(make_spec(entry_script="main.py"))
    assert caught.value.field == "entry_script"
    with pytest.raises(Invalid):
        pkg.source_manifest(make_spec(source=(SourceFile("score.py", "k", 1), SourceFile("../up.py", "k2", 1))))
    huge = make_spec(source=(SourceFile("score.py", "k", 1), SourceFile("data.bin", "k3", 250 * 1024 * 1024)))
    with pytest.raises(Invalid, match="keep large files out"):
        pkg.source_manifest(huge)


def test_variables_with_line_breaks_are_passed_in_the_function_environment():
    env = plan(environment=environment(PEM="-----BEGIN-----\nabc\n-----END-----", ONE="line")).environment
    assert env["PEM"] == "-----BEGIN-----\nabc\n-----END-----" and "ONE" not in env
    # ... within Lambda's 4 KB, or refused naming the environment
    with pytest.raises(Invalid, match="line breaks") as caught:
        plan(environment=environment(PEM="x\n" * 2000))
    assert caught.value.field == "environment"
    # ... and never under a name Lambda sets itself
    with pytest.raises(Invalid, match="AWS_REGION") as caught:
        plan(environment=environment(AWS_REGION="eu\nwest"))
    assert caught.value.field == "environment"


def test_an_environment_without_an_image_cannot_be_planned():
    unbuilt = replace(environment(), image_uri=None)
    with pytest.raises(NimbusError, match="no built image") as caught:
        plan(environment=unbuilt)
    assert caught.value.field == "environment"
