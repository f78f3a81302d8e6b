"""Environment images on AWS: the pure plan (Dockerfile, buildspec, context), its pip step run for real
offline, and the CodeBuild/ECR requests under moto."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from chalicelib.compute import image_build
from chalicelib.compute.image_build import IMAGE_FORMAT, ImageBuilds, build_context, buildspec, dockerfile
from chalicelib.services.environments import definition_hash, normalize_definition
from chalicelib.domain import table_keys
from chalicelib.services.identity import Principal
from tests.wheels import build_tiny_wheel

ROOT = Path(__file__).resolve().parents[3]
ADMIN = Principal("admin", True, "t1")
PREFIX = "ws/team/environments/"  # where a workspace's image builds keep their context and log


def test_the_dockerfile_installs_the_requirements_the_client_and_sets_the_variables():
    definition = normalize_definition("3.12", ["numpy==2.0.0", "--find-links /w"],
                                      {"GREETING": 'say "hi" for $5', "MULTI": "a\nb"}, None)
    text = dockerfile(definition, "f" * 64)
    lines = text.splitlines()
    assert lines[1] == "FROM python:3.12-slim"
    assert "COPY requirements.txt /opt/nimbus/requirements.txt" in lines
    assert 'RUN ["python", "-m", "pip", "install", "-r", "/opt/nimbus/requirements.txt"]' in lines
    client = next(line for line in lines if "requests>=" in line)
    assert json.loads(client[len("RUN "):])[:4] == ["python", "-m", "pip", "install"]
    assert 'ENV GREETING="say \\"hi\\" for \\$5"' in lines
    assert not any(line.startswith("ENV MULTI") for line in lines)  # a line break cannot be an ENV: the runner sets it
    assert f"ENV NIMBUS_ENVIRONMENT_HASH={'f' * 64}" in lines and lines[-1] == 'CMD ["python", "-m", "nimbus.runtime.runner"]'
    # no requirements, no requirements step
    assert "requirements.txt" not in dockerfile(normalize_definition(None, [], None, "ubuntu:24.04"), "0" * 64)


def test_the_client_requirements_are_the_packages_pyproject_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~]", line)[0].lower() for line in declared}
    for requirement in image_build.CLIENT_REQUIREMENTS:
        assert re.split(r"[<>=!~]", requirement)[0].lower() in names, requirement


def test_the_buildspec_builds_pushes_and_keeps_the_log():
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/nimbus-team:" + "a" * 64
    spec = yaml.safe_load(buildspec(image, "bucket", "ws/environments/x/build.log"))
    commands = spec["phases"]["build"]["commands"]
    assert spec["version"] == 0.2 and spec["env"]["shell"] == "bash"
    assert "docker login" in spec["phases"]["pre_build"]["commands"][0]
    assert "123456789012.dkr.ecr.us-east-1.amazonaws.com" in spec["phases"]["pre_build"]["commands"][0]
    assert f"docker build --tag {image} ." in commands[0] and f"docker push {image}" in commands[1]
    assert spec["phases"]["build"]["finally"] == ["aws s3 cp build.log s3://bucket/ws/environments/x/build.log || true"]
    assert image_build.repository_name("nimbus-dev", "a--b-") == "nimbus-dev/a-b"
    assert image_build.repository_name("Nimbus_Prod", "team") == "nimbus-prod/team"


def test_the_dockerfile_pip_step_installs_its_requirements_file_for_real(tmp_path):
    # Given a definition whose package comes from a local wheel, and its build context unpacked
    wheels = build_tiny_wheel(tmp_path / "wheels").parent
    definition = normalize_definition(None, ["--no-index", f"--find-links {wheels}", "nimbus-tiny==0.1"], None, None)
    context = tmp_path / "context"
    with zipfile.ZipFile(io.BytesIO(build_context(definition, definition_hash(definition)))) as archive:
        archive.extractall(context)
    assert (context / "nimbus-client" / "nimbus" / "runtime" / "runner.py").is_file()
    # When the Dockerfile's requirements step runs here, its image paths mapped onto the context
    lines = (context / "Dockerfile").read_text().splitlines()
    copied = dict(line.split()[1:3][::-1] for line in lines if line.startswith("COPY "))  # image path -> context path
    step = next(json.loads(line[4:]) for line in lines if line.startswith("RUN [") and '"-r"' in line)
    argv = [str(context / copied[arg]) if arg in copied else arg for arg in step]
    assert argv[0] == "python"
    result = subprocess.run([sys.executable, *argv[1:], "--dry-run", "--disable-pip-version-check"],
                            capture_output=True, text=True, timeout=120)
    # Then pip resolves the requirements file it names from the wheel folder, without any index
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Would install nimbus-tiny-0.1" in result.stdout


def test_the_image_can_also_serve_as_a_lambda_function():
    lines = dockerfile(normalize_definition(None, ["numpy==2.0.0"], None, None), "e" * 64).splitlines()
    runtime = next(json.loads(line[4:]) for line in lines if line.startswith("RUN [") and "--target" in line)
    assert runtime[:6] == ["python", "-m", "pip", "install", "--target", "/opt/nimbus/runtime"]
    assert any(r.startswith("awslambdaric") for r in runtime[6:])  # the runtime interface client
    assert {"boto3==1.44.5", "aws-lambda-powertools==3.37.0", "orjson==3.13.0"} <= set(runtime[6:])
    # Both folders after site-packages: the handler's sources with the client, then its dependencies
    pth = next(line for line in lines if "nimbus-client.pth" in line)
    assert "/opt/nimbus/client\\\\n/opt/nimbus/runtime\\\\n" in pth
    # The environment's own requirements come first; Batch still runs the runner
    assert lines.index(next(line for line in lines if '"-r"' in line)) < lines.index("RUN " + json.dumps(runtime))
    assert lines[-1] == 'CMD ["python", "-m", "nimbus.runtime.runner"]'


def test_the_scoring_requirements_are_pinned_as_requirements_txt_pins_them():
    pinned = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==")
            pinned[name.lower()] = version
    names = set()
    for requirement in image_build.SCORING_REQUIREMENTS:
        name = re.split(r"[<>=!~]", requirement)[0].lower()
        names.add(name)
        if name in pinned:
            assert requirement == f"{name}=={pinned[name]}", requirement
    assert {"awslambdaric", "boto3", "aws-lambda-powertools", "orjson"} <= names


def test_the_scoring_handler_imports_from_the_copy_in_the_context(tmp_path):
    # Given the build context unpacked: its client folder is what the image puts on sys.path
    definition = normalize_definition(None, [], None, None)
    with zipfile.ZipFile(io.BytesIO(build_context(definition, definition_hash(definition)))) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path)
    assert "nimbus-client/chalicelib/scoring/lambda_handler.py" in names
    assert not [n for n in names if n.startswith("nimbus-client/chalicelib/api/")]  # the handler's part only
    # When a fresh interpreter imports the handler and what it imports lazily, from that folder first
    code = ("import chalicelib, chalicelib.scoring.lambda_handler as h, chalicelib.store.factory, "
            "chalicelib.store.dynamo_table, chalicelib.store.s3_blobs, chalicelib.settings; "
            "print(chalicelib.__file__); print(callable(h.handler))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={"PYTHONPATH": str(tmp_path / "nimbus-client"), "PATH": "/usr/bin:/bin"})
    # Then every module it needs is in the copy
    assert result.returncode == 0, result.stderr
    origin, is_callable = result.stdout.split()
    assert Path(origin).is_relative_to(tmp_path / "nimbus-client") and is_callable == "True"


# --- CodeBuild and ECR under moto -------------------------------------------------------------------
@pytest.fixture
def aws_services(aws_env, tmp_path):
    import boto3

    from chalicelib.wiring import build_services
    from chalicelib.settings import Settings
    from chalicelib.store import schema

    settings = Settings(backend="aws", home=tmp_path, table_name="nimbus-test", bucket="nimbus-test",
                        codebuild_project="nimbus-envs")
    boto3.client("dynamodb", region_name=settings.region).create_table(
        **schema.dynamodb_table_definition(settings.table_name))
    boto3.client("s3", region_name=settings.region).create_bucket(Bucket=settings.bucket)
    boto3.client("codebuild", region_name=settings.region).create_project(
        name="nimbus-envs", source={"type": "S3", "location": "nimbus-test/environments/none.zip"},
        artifacts={"type": "NO_ARTIFACTS"}, serviceRole="arn:aws:iam::123456789012:role/codebuild",
        environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                     "computeType": "BUILD_GENERAL1_SMALL", "privilegedMode": True})
    services = build_services(settings)
    services.workspaces.create(ADMIN, "team")
    return services


def test_a_new_definition_starts_one_image_build_shared_by_identical_ones(aws_services):
    import boto3

    environments = aws_services.environments
    first, _ = environments.create(ADMIN, "team", "sklearn", pip=["numpy==2.0.0"])
    twin, _ = environments.create(ADMIN, "team", "twin", pip=["numpy==2.0.0"])
    assert twin["hash"] == first["hash"]

    codebuild = boto3.client("codebuild", region_name="us-east-1")
    assert len(codebuild.list_builds_for_project(projectName="nimbus-envs")["ids"]) == 1
    repository = boto3.client("ecr", region_name="us-east-1").describe_repositories(
        repositoryNames=["nimbus-test/team"])
    uri = repository["repositories"][0]["repositoryUri"]
    prefix = aws_services.workspaces.record("team")["blob_prefix"] + f"environments/{first['hash']}/"
    with zipfile.ZipFile(io.BytesIO(aws_services.ctx.blobs.get_bytes(prefix + "context.zip"))) as archive:
        assert archive.read("requirements.txt") == b"numpy==2.0.0\n"

    # moto finishes builds at once: reading the version refreshes the build's state
    build, = environments.get("team", "sklearn", "1")["builds"]
    assert build["state"] == "Succeeded" and build["image_uri"] == f"{uri}:{first['hash']}-{IMAGE_FORMAT}"
    assert build["log_key"] == prefix + "build.log" and build["kind"] == "image"
    assert environments.get("team", "twin", "latest")["builds"] == [build]
    version = aws_services.ctx.table.get_item(table_keys.environment_version("team", "sklearn", 1))
    assert ImageBuilds(aws_services.ctx).ready_image("team", version, PREFIX) == build["image_uri"]
    assert ImageBuilds(aws_services.ctx).ready_image("elsewhere", version, PREFIX) is None


def test_an_image_of_an_older_format_is_built_again_under_a_tag_of_its_own(aws_services):
    import boto3

    aws_services.environments.create(ADMIN, "team", "sklearn", pip=["numpy==2.0.0"])
    version = aws_services.ctx.table.get_item(table_keys.environment_version("team", "sklearn", 1))
    builds = ImageBuilds(aws_services.ctx)
    assert builds.ready_image("team", version, PREFIX)  # built (moto finishes at once)
    # an image built before the format existed: a build item without it, tagged with the bare hash
    key = table_keys.environment_build(version["hash"], "image#team")
    old = aws_services.ctx.table.get_item(key)
    aws_services.ctx.table.put({k: v for k, v in old.items() if k != "format"}
                               | {"image_uri": old["image_uri"].rsplit("-", 1)[0]})

    codebuild = boto3.client("codebuild", region_name="us-east-1")
    before = len(codebuild.list_builds_for_project(projectName="nimbus-envs")["ids"])
    # it is not served: a rebuild starts, and its image (a new tag) is served once it Succeeded
    assert builds.ready_image("team", version, PREFIX) is None
    assert len(codebuild.list_builds_for_project(projectName="nimbus-envs")["ids"]) == before + 1
    rebuilt = builds.ready_image("team", version, PREFIX)
    assert rebuilt.endswith(f":{version['hash']}-{IMAGE_FORMAT}")
    assert aws_services.ctx.table.get_item(key)["format"] == IMAGE_FORMAT


def test_a_build_that_cannot_start_is_failed_and_claimed_again_later(aws_services, monkeypatch):
    from botocore.exceptions import ClientError

    aws_services.environments.create(ADMIN, "team", "other", pip=["pandas"])
    item = aws_services.ctx.table.get_item(table_keys.environment_version("team", "other", 1))
    broken = {**item, "hash": "b" * 64}

    # a build whose start is refused records the failure
    def refuse(**request):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "StartBuild")

    refusing = ImageBuilds(aws_services.ctx)
    monkeypatch.setattr(refusing.codebuild, "start_build", refuse)
    failed = refusing.start("team", broken, PREFIX)
    assert failed["state"] == "Failed" and "AccessDenied" in failed["error"]
    # a later start claims the failed build again and starts it
    retried = ImageBuilds(aws_services.ctx).start("team", broken, PREFIX)
    assert retried["state"] == "Building" and retried["build_id"]
    assert ImageBuilds(aws_services.ctx).refresh("team", "b" * 64)["state"] == "Succeeded"
