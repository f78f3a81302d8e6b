"""Environment images on AWS: a CodeBuild build per definition hash, pushed to the workspace's ECR repository.

The plan is pure data, computed first and tested without AWS: the Dockerfile, the requirements file it
installs, the build context (a zip the build reads from the bucket) and the buildspec (docker build,
push, and the build log copied to the bucket). `ImageBuilds` then sends it: it claims the `BUILD#<hash>`
item with a conditional put (identical definitions build once; a failed build may be claimed again),
makes sure the repository exists, starts the build and records its id and image; `refresh` reads the
build's state back.

The image carries the nimbus client (copied from this deployment, which packages `nimbus/`) so the
runner, `python -m nimbus.runtime.runner`, runs inside it; NIMBUS_ENVIRONMENT_HASH tells that runner the image
already is the environment, so it builds no virtualenv. That stays the image's CMD (Batch jobs).

The same image is the code of the Lambda functions of deployments that name the environment
(chalicelib/hosting/lambda_package.py sets their ImageConfig): beside the client it holds the scoring
runtime's sources (SCORING_RUNTIME, copied from this deployment like the zip functions' package) and, in
a folder of their own (RUNTIME_DIR), the Lambda runtime interface client and the handler's dependencies,
pinned as requirements.txt pins them. Both folders come after site-packages on sys.path, so the
environment's own packages win over them.
"""
from __future__ import annotations

import importlib.util
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import yaml
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws_clients import make_client
from chalicelib.errors import NimbusError
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.store.table import (
    ConditionFailed, Update, all_of, any_of, attr_absent, attr_eq, attr_lt, item_absent,
)
from nimbus.runtime.environment_build import CLIENT_REQUIREMENTS

WORKDIR = "/opt/nimbus"
REQUIREMENTS = "requirements.txt"
CLIENT_DIR = "nimbus-client"  # in the context: the nimbus package's .py files, and the scoring runtime's
RUNTIME_DIR = f"{WORKDIR}/runtime"  # in the image: what the scoring handler needs (pip --target)
# The scoring handler (chalicelib.scoring.lambda_handler) and what it imports, lazily included: settings,
# the table and blob adapters for telemetry and capture. Paths relative to the repository root.
SCORING_RUNTIME = ("chalicelib/__init__.py", "chalicelib/errors.py", "chalicelib/settings.py",
                   "chalicelib/aws_clients.py", "chalicelib/domain", "chalicelib/scoring", "chalicelib/store")
# The runtime interface client (Lambda's side of an image function), boto3 (S3 downloads, telemetry),
# powertools (metrics) and orjson, pinned as requirements.txt pins them (a test compares).
SCORING_REQUIREMENTS = ("awslambdaric>=3,<5", "boto3==1.44.5", "botocore==1.44.5", "aws-lambda-powertools==3.37.0",
                        "orjson==3.13.0")
# What an image holds beyond its definition (the client, the scoring runtime): the definition's hash does
# not cover it, so a build records the format it made, and an image of an older format is built again
# (under a tag of its own: the repositories' tags are immutable). 2: images also serve scoring functions.
# 3: the runner is `nimbus.runtime.runner`, and the scoring runtime needs chalicelib/domain.
IMAGE_FORMAT = 3
# CodeBuild's buildStatus → the build item's state.
STATES = {"IN_PROGRESS": "Building", "SUCCEEDED": "Succeeded", "FAILED": "Failed", "FAULT": "Failed",
          "TIMED_OUT": "Failed", "STOPPED": "Failed"}


# --- the plan (pure) --------------------------------------------------------------------------------
def repository_name(table_name: str, workspace: str) -> str:
    """`<table>/<workspace>`: the stage's table namespaces its repositories, so stages sharing an account
    never share one (and IAM grants a stage `repository/<table>/*` only). ECR allows single '-' between
    lowercase letters and digits; names may repeat or end with one."""
    return f"{_ecr_component(table_name)}/{_ecr_component(workspace)}"


def _ecr_component(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def requirements_text(definition: Mapping[str, Any]) -> str:
    return "".join(line + "\n" for line in definition.get("pip") or [])


def dockerfile(definition: Mapping[str, Any], digest: str) -> str:
    """FROM the base image; the requirements, then the client's own dependencies (pip leaves what already
    satisfies them); the client; the variables. Exec-form RUNs: no shell quoting of requirement lines."""
    lines = [f"# Nimbus environment {digest}", f"FROM {definition['base_image']}",
             "ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1",
             f"WORKDIR {WORKDIR}/job"]
    if definition.get("pip"):
        lines += [f"COPY {REQUIREMENTS} {WORKDIR}/{REQUIREMENTS}",
                  "RUN " + json.dumps(["python", "-m", "pip", "install", "-r", f"{WORKDIR}/{REQUIREMENTS}"])]
    lines.append("RUN " + json.dumps(["python", "-m", "pip", "install", *CLIENT_REQUIREMENTS]))
    # The scoring handler's own dependencies, apart: an environment pinning other versions keeps them.
    lines.append("RUN " + json.dumps(["python", "-m", "pip", "install", "--target", RUNTIME_DIR,
                                      *SCORING_REQUIREMENTS]))
    # After site-packages (a .pth), so the environment's own packages win over the client's folder.
    lines += [f"COPY {CLIENT_DIR} {WORKDIR}/client",
              "RUN " + json.dumps(["python", "-c", "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()"
                                   f"['purelib'], 'nimbus-client.pth').write_text('{WORKDIR}/client\\n"
                                   f"{RUNTIME_DIR}\\n')"]),
              # Lambda's file system is read-only: compiled now, or at every cold start.
              "RUN " + json.dumps(["python", "-m", "compileall", "-q", f"{WORKDIR}/client"])]
    for name, value in sorted((definition.get("variables") or {}).items()):
        if "\n" in value or "\r" in value:
            lines.append(f"# {name} holds a line break: the runner sets it when a run starts, and a deployment's "
                         "function configuration holds it")
        else:
            lines.append(f"ENV {name}={_quoted(value)}")
    lines += [f"ENV NIMBUS_ENVIRONMENT_HASH={digest}", 'CMD ["python", "-m", "nimbus.runtime.runner"]']
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    """A double-quoted Dockerfile word: backslash, quote and '$' (variable substitution) escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def client_files() -> list[tuple[str, Path]]:
    """(archive name, local path) of the nimbus package's source files and the scoring runtime's."""
    spec = importlib.util.find_spec("nimbus")
    if spec is None or not spec.submodule_search_locations:
        raise NimbusError("the nimbus client is not packaged with this deployment")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = [(f"{CLIENT_DIR}/nimbus/{path.relative_to(root).as_posix()}", path) for path in sorted(root.rglob("*.py"))
             if "__pycache__" not in path.parts]
    return files + scoring_runtime_files()


def scoring_runtime_files() -> list[tuple[str, Path]]:
    """(archive name, local path) of SCORING_RUNTIME, read from the chalicelib package this code runs from."""
    spec = importlib.util.find_spec("chalicelib")
    if spec is None or not spec.submodule_search_locations:
        raise NimbusError("the scoring runtime (chalicelib) is not packaged with this deployment")
    base = Path(next(iter(spec.submodule_search_locations))).parent
    files = []
    for entry in SCORING_RUNTIME:
        path = base / entry
        found = sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts) if path.is_dir() else [path]
        if not found or not all(p.is_file() for p in found):
            raise NimbusError(f"the scoring runtime is incomplete here: {entry} is missing")
        files += [(f"{CLIENT_DIR}/{p.relative_to(base).as_posix()}", p) for p in found]
    return files


def build_context(definition: Mapping[str, Any], digest: str) -> bytes:
    """The zip CodeBuild unpacks as its source: Dockerfile, requirements.txt, the client and the scoring runtime."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Dockerfile", dockerfile(definition, digest))
        archive.writestr(REQUIREMENTS, requirements_text(definition))
        for name, path in client_files():
            archive.write(path, name)
    return buffer.getvalue()


def buildspec(image_uri: str, bucket: str, log_key: str) -> str:
    """docker build and push, with the output teed to build.log, which is copied to the bucket whatever happens."""
    registry = image_uri.split("/", 1)[0]
    spec = {"version": 0.2, "env": {"shell": "bash"}, "phases": {
        "pre_build": {"commands": [
            f"aws ecr get-login-password --region $AWS_DEFAULT_REGION | docker login --username AWS "
            f"--password-stdin {registry}"]},
        "build": {"commands": [
            f"set -o pipefail && docker build --tag {image_uri} . 2>&1 | tee build.log",
            f"set -o pipefail && docker push {image_uri} 2>&1 | tee -a build.log"],
            "finally": [f"aws s3 cp build.log s3://{bucket}/{log_key} || true"]}}}
    return yaml.safe_dump(spec, sort_keys=False, width=1000)


def start_build_request(project: str, bucket: str, context_key: str, spec: str) -> dict:
    return {"projectName": project, "sourceTypeOverride": "S3", "sourceLocationOverride": f"{bucket}/{context_key}",
            "buildspecOverride": spec, "artifactsOverride": {"type": "NO_ARTIFACTS"}, "privilegedModeOverride": True}


# --- sending it -------------------------------------------------------------------------------------
class ImageBuilds:
    def __init__(self, ctx: Context, *, codebuild=None, ecr=None):
        self.ctx = ctx
        self._codebuild, self._ecr = codebuild, ecr

    @property
    def codebuild(self):
        if self._codebuild is None:
            self._codebuild = make_client("codebuild", self.ctx.settings)
        return self._codebuild

    @property
    def ecr(self):
        if self._ecr is None:
            self._ecr = make_client("ecr", self.ctx.settings)
        return self._ecr

    def start(self, workspace: str, item: Mapping[str, Any], blob_prefix: str) -> dict:
        """The workspace's build of the version's definition: started now, unless one is running or done. Its
        context and log go under `blob_prefix` + the definition's hash."""

        digest = item["hash"]
        key = table_keys.environment_build(digest, table_keys.IMAGE_BUILD_KIND + workspace)
        claim = {"pk": key.pk, "sk": key.sk, "entity": "environment_build", "workspace": workspace, "hash": digest,
                 "state": "Building", "format": IMAGE_FORMAT, "started": self.ctx.now()}
        try:
            self.ctx.table.put(claim, any_of(item_absent(), attr_eq("state", "Failed"), attr_absent("format"),
                                             attr_lt("format", IMAGE_FORMAT)))
        except ConditionFailed:
            return self.ctx.table.get_item(key)  # building or built by an identical definition
        prefix = f"{blob_prefix}{digest}/"
        try:
            image_uri = f"{self._repository_uri(workspace)}:{digest}-{IMAGE_FORMAT}"
            self.ctx.blobs.put_bytes(prefix + "context.zip", build_context(item["definition"], digest))
            spec = buildspec(image_uri, self.ctx.settings.bucket, prefix + "build.log")
            build = self.codebuild.start_build(**start_build_request(
                self.ctx.settings.codebuild_project, self.ctx.settings.bucket, prefix + "context.zip", spec))["build"]
        except (ClientError, BotoCoreError, NimbusError) as err:
            return self.ctx.table.update(Update(key, set={"state": "Failed", "error": f"starting the build failed: {err}",
                                                          "finished": self.ctx.now()}))
        return self.ctx.table.update(Update(key, set={"build_id": build["id"], "image_uri": image_uri,
                                                      "log_key": prefix + "build.log"}))

    def refresh(self, workspace: str, digest: str) -> dict | None:
        """The build item, its state brought up to date from CodeBuild while it is Building."""
        key = table_keys.environment_build(digest, table_keys.IMAGE_BUILD_KIND + workspace)
        item = self.ctx.table.get_item(key)
        if item is None or item.get("state") != "Building" or not item.get("build_id"):
            return item
        builds = self.codebuild.batch_get_builds(ids=[item["build_id"]]).get("builds") or []
        status = builds[0].get("buildStatus", "FAILED") if builds else "FAILED"
        state = STATES.get(status, "Failed")
        if state == "Building":
            return item
        changes: dict = {"state": state, "finished": self.ctx.now(), "build_status": status}
        if state == "Failed":
            changes["error"] = f"CodeBuild ended the build {status}; its log: {item.get('log_key')}"
        try:
            return self.ctx.table.update(Update(key, set=changes, condition=all_of(
                attr_eq("state", "Building"), attr_eq("build_id", item["build_id"]))))
        except ConditionFailed:
            return self.ctx.table.get_item(key)  # refreshed (or claimed again) meanwhile

    def ready_image(self, workspace: str, version: Mapping[str, Any], blob_prefix: str) -> str | None:
        """The image of an environment version's definition once its build Succeeded; None before. An
        image of an older format starts its rebuild."""
        item = self.refresh(workspace, version["hash"])
        if item is not None and item.get("state") == "Succeeded" and item.get("format", 1) < IMAGE_FORMAT:
            item = self.start(workspace, version, blob_prefix)
        return item.get("image_uri") if item is not None and item.get("state") == "Succeeded" else None

    def _repository_uri(self, workspace: str) -> str:
        name = repository_name(self.ctx.settings.table_name, workspace)
        try:
            reply = self.ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE",
                                               tags=[{"Key": "nimbus:workspace", "Value": workspace}])
        except self.ecr.exceptions.RepositoryAlreadyExistsException:
            reply = {"repository": self.ecr.describe_repositories(repositoryNames=[name])["repositories"][0]}
        return reply["repository"]["repositoryUri"]
