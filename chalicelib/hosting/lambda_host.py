"""The FunctionHost port on AWS Lambda: sends what lambda_package.py plans.

One function per endpoint, one published version per deployment revision, the alias `live` splitting
traffic. A revision's rollout (write the function, publish a version, route the alias) is taken step by
step, never waiting for Lambda inside a request: lambda_rollout.py. The deployments service rolls out one
deployment of an endpoint at a time; should two publishes still overlap, the publish step notices (the
function no longer holds what this rollout wrote, or its RevisionId moved) and fails rather than
publishing a mixture.

A deployment without an environment is a zip function (the package staged in the bucket until Lambda has
copied it); one with an environment runs the environment's image, its source folder listed by a manifest
in the bucket that is kept as long as the version exists. An endpoint's function keeps the package type it
was created with.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import uuid
import zipfile
from collections import deque


from chalicelib.aws_clients import make_client
from chalicelib.errors import Conflict, NotFound, Unavailable
from chalicelib.hosting import lambda_package as pkg
from chalicelib.hosting.lambda_calls import delete_version, find_alias, translated
from chalicelib.hosting.lambda_invoke import deployment_of, error_result, parse_response, score_event
from chalicelib.hosting.lambda_rollout import LambdaRollout
from chalicelib.hosting.port import DeploymentSpec, EndpointTarget, FunctionHost, HostState, ScoreResult
from chalicelib.settings import Settings
from chalicelib.store.blobs import Blobs

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same files always give the same CodeSha256
_LOG_PAGES = 50  # bound on filter_log_events pages per logs() call


class LambdaHost(FunctionHost):
    def __init__(self, settings: Settings, blobs: Blobs, *, lambda_client=None, logs_client=None, sts_client=None):
        self.settings = settings
        self.blobs = blobs
        self.client = lambda_client or make_client("lambda", settings)
        self.rollouts = LambdaRollout(self.client, blobs)
        self._logs = logs_client
        self._sts = sts_client
        self._role_arn: str | None = None
        self._runtime: tuple[pkg.PackageEntry, ...] | None = None

    def function_name(self, workspace: str, endpoint: str) -> str:
        return pkg.function_name(self.settings.table_name, workspace, endpoint)

    # --- deploy ------------------------------------------------------------------------------------
    def check(self, spec: DeploymentSpec) -> None:
        """The plan's own checks, and the endpoint function's package type (see _existing_function)."""
        self._existing_function(self._plan(spec))

    def deploy(self, spec: DeploymentSpec, previous: dict | None) -> HostState:
        """The package staged (zip) or the source manifest written (image), then the rollout's first steps."""
        plan = self._plan(spec)
        existing = self._existing_function(plan)
        if plan.image_uri:
            self.blobs.put_bytes(plan.source_manifest, pkg.source_manifest(spec), content_type="application/json")
            return self.rollouts.begin(plan, plan.image_code(), None, None, existing, previous)
        if self._runtime is None:
            self._runtime = pkg.runtime_entries()
        archive = self.build_zip(pkg.package_manifest(spec, self._runtime))
        sha256 = base64.b64encode(hashlib.sha256(archive).digest()).decode("ascii")  # Lambda's CodeSha256
        key = pkg.package_key(plan.function_name, hashlib.sha256(archive).hexdigest())
        self.blobs.put_bytes(key, archive, content_type="application/zip")
        code = {"S3Bucket": self.settings.bucket, "S3Key": key}
        return self.rollouts.begin(plan, code, key, sha256, existing, previous)

    def advance(self, rollout: dict) -> HostState:
        return self.rollouts.advance(rollout)

    def abandon(self, rollout: dict) -> None:
        self.rollouts.abandon(rollout)

    def _plan(self, spec: DeploymentSpec) -> pkg.FunctionPlan:
        return pkg.plan_function(spec, table=self.settings.table_name, bucket=self.settings.bucket,
                                 role_arn=self.role_arn())

    def _existing_function(self, plan: pkg.FunctionPlan) -> dict | None:
        """The endpoint's function as it is, or None; Conflict when its package type is not the plan's:
        Lambda cannot change it, and every deployment of the endpoint is a version of this one function."""
        name = plan.function_name
        try:
            with translated(f"reading function {name}"):
                current = self.client.get_function_configuration(FunctionName=name)
        except NotFound:
            return None
        held = current.get("PackageType") or pkg.ZIP
        if held != plan.package_type:
            wanted = ("runs in an environment (a container image function)" if plan.package_type == pkg.IMAGE
                      else "names no environment (a zip function)")
            present = "container image" if held == pkg.IMAGE else "zip"
            raise Conflict(f"this deployment {wanted}, but the endpoint's scoring function {name} is a {present} "
                           "function: Lambda cannot change a function's package type, and all deployments of an "
                           "endpoint are versions of one function. Deploy it to another endpoint, or delete this "
                           "endpoint first", field="environment")
        return current

    def build_zip(self, entries: tuple[pkg.PackageEntry, ...]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry in entries:
                if entry.local_path:
                    with open(entry.local_path, "rb") as handle:
                        data = handle.read()
                else:
                    data = self.blobs.get_bytes(entry.blob_key)
                info = zipfile.ZipInfo(entry.arcname, date_time=_ZIP_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
        return buffer.getvalue()

    # --- traffic -----------------------------------------------------------------------------------
    def set_traffic(self, workspace: str, endpoint: str, traffic: dict[str, int], details: dict[str, dict]) -> None:
        if not any(weight > 0 for weight in traffic.values()):
            return  # nothing takes traffic: the last deployment removed took the alias with it
        name = self.function_name(workspace, endpoint)
        versions = {d: (details.get(d) or {}).get("function_version") for d in traffic}
        request = pkg.update_alias(name, traffic, versions)
        # Updating an alias is atomic: requests in flight finish on the version they started on.
        try:
            with translated(f"updating alias {pkg.ALIAS} of {name}"):
                self.client.update_alias(**request)
        except NotFound:
            with translated(f"creating alias {pkg.ALIAS} of {name}"):
                self.client.create_alias(**request)

    # --- invoke ------------------------------------------------------------------------------------
    def invoke(self, target: EndpointTarget, body: bytes, content_type: str) -> ScoreResult:
        if not any(w > 0 for w in target.traffic.values()):
            return error_result(503, None, "NoDeployment", f"endpoint {target.endpoint!r} has no deployment taking traffic")
        name = self.function_name(target.workspace, target.endpoint)
        event = score_event(body, content_type, str(uuid.uuid4()), int(time.time() * 1000))
        payload = json.dumps(event).encode("utf-8")
        if len(payload) > pkg.MAX_INVOKE_PAYLOAD:
            return error_result(413, None, "PayloadTooLarge", "the request body is over Lambda's 6 MB limit", field="body")
        try:
            with translated(f"invoking {name}:{pkg.ALIAS}"):
                response = self.client.invoke(FunctionName=name, Qualifier=pkg.ALIAS,
                                              InvocationType="RequestResponse", Payload=payload)
        except NotFound as err:
            raise Unavailable(f"endpoint {target.endpoint!r} has no scoring function: {err.message}") from err
        deployment = deployment_of(response.get("ExecutedVersion"), target.details)
        return parse_response(response.get("FunctionError"), response["Payload"].read(), deployment)

    # --- removal -----------------------------------------------------------------------------------
    def remove(self, workspace: str, endpoint: str, deployment: str, details: dict) -> None:
        details = details or {}
        version = details.get("function_version")
        if version:
            name = self.function_name(workspace, endpoint)
            alias = find_alias(self.client, name)
            if alias is not None:
                self._unroute(name, alias, version)
            delete_version(self.client, name, version)
        if details.get("source_manifest"):
            self.blobs.delete(details["source_manifest"])

    def _unroute(self, name: str, alias: dict, version: str) -> None:
        """Take `version` out of the alias so it can be deleted (Lambda refuses while an alias uses it)."""
        weights = dict(alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {}))
        if alias["FunctionVersion"] == version:
            if not weights:
                with translated(f"deleting alias {pkg.ALIAS} of {name}"):
                    self.client.delete_alias(FunctionName=name, Name=pkg.ALIAS)
                return
            primary, _ = max(weights.items(), key=lambda item: item[1])
            weights.pop(primary)
        elif version in weights:
            primary = alias["FunctionVersion"]
            weights.pop(version)
        else:
            return
        with translated(f"updating alias {pkg.ALIAS} of {name}"):
            self.client.update_alias(FunctionName=name, Name=pkg.ALIAS, FunctionVersion=primary,
                                     RoutingConfig={"AdditionalVersionWeights": weights})

    def remove_endpoint(self, workspace: str, endpoint: str) -> None:
        name = self.function_name(workspace, endpoint)
        try:
            with translated(f"deleting function {name}"):
                self.client.delete_function(FunctionName=name)
        except NotFound:
            pass
        self.blobs.delete_prefix(f"{pkg.SOURCE_MANIFEST_PREFIX}{name}/")  # image functions' source manifests
        self.blobs.delete_prefix(f"{pkg.PACKAGE_PREFIX}{name}/")  # zips staged by rollouts that never wrote them

    # --- logs --------------------------------------------------------------------------------------
    def logs(self, workspace: str, endpoint: str, deployment: str, details: dict, tail: int) -> str:
        version = (details or {}).get("function_version")
        if not version or tail <= 0:
            return ""
        group = f"/aws/lambda/{self.function_name(workspace, endpoint)}"
        client = self._logs_client()
        marker = f"[{version}]"  # Lambda names streams YYYY/MM/DD/[<version>]<instance id>
        try:
            with translated(f"reading the log streams of {group}"):
                streams = client.describe_log_streams(logGroupName=group, orderBy="LastEventTime",
                                                      descending=True, limit=50)["logStreams"]
        except NotFound:
            return ""
        names = [s["logStreamName"] for s in streams if marker in s["logStreamName"]]
        if not names:
            return ""
        lines: deque[str] = deque(maxlen=tail)
        args = {"logGroupName": group, "logStreamNames": names[:100]}
        for _ in range(_LOG_PAGES):
            with translated(f"reading the logs of {group}"):
                page = client.filter_log_events(**args)
            for event in sorted(page.get("events", []), key=lambda e: (e["timestamp"], e.get("ingestionTime", 0))):
                lines.extend(event["message"].rstrip("\n").split("\n"))
            if not page.get("nextToken"):
                break
            args["nextToken"] = page["nextToken"]
        return "\n".join(lines)

    # --- clients and identity ----------------------------------------------------------------------
    def _logs_client(self):
        if self._logs is None:
            self._logs = make_client("logs", self.settings)
        return self._logs

    def role_arn(self) -> str:
        """NIMBUS_SCORING_ROLE_ARN holds an ARN, or a role name (the stage config cannot know the account):
        a name is completed with this account's id from sts:GetCallerIdentity, which needs no permission."""
        configured = self.settings.scoring_role_arn
        if not configured or configured.startswith("arn:"):
            return configured
        if self._role_arn is None:
            sts = self._sts or make_client("sts", self.settings)
            with translated("reading this account's id"):
                caller = sts.get_caller_identity()
            partition = caller["Arn"].split(":")[1]
            self._role_arn = f"arn:{partition}:iam::{caller['Account']}:role/{configured}"
        return self._role_arn
