"""The FunctionHost port on AWS Lambda: sends what lambda_package.py plans.

One function per endpoint, one published version per deployment revision, the alias `live` splitting
traffic. The deployments service deploys one deployment of an endpoint at a time; should two publishes
still overlap, `_publish` notices (the function no longer holds what this deploy wrote, or its
RevisionId moved) and raises Conflict rather than publishing a mixture.

A deployment without an environment is a zip function (the package staged in the bucket); one with an
environment runs the environment's image, its source folder listed by a manifest in the bucket that is
kept as long as the version exists. An endpoint's function keeps the package type it was created with.
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
from contextlib import contextmanager
from typing import Callable, Iterator

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

from chalicelib.errors import Conflict, Invalid, NimbusError, NotFound, Unavailable
from chalicelib.hosting import lambda_package as pkg
from chalicelib.hosting.lambda_invoke import deployment_of, error_result, parse_response, score_event
from chalicelib.hosting.port import DeploymentSpec, EndpointTarget, FunctionHost, HostState, ScoreResult
from chalicelib.settings import Settings
from chalicelib.store.blobs import Blobs

_BUSY = {"TooManyRequestsException", "ThrottlingException", "Throttling", "ServiceException",
         "EC2ThrottledException", "ENILimitReachedException", "ResourceNotReadyException",
         "SubnetIPAddressLimitReachedException", "RequestTimeout"}
_CONFLICT = {"ResourceConflictException", "PreconditionFailedException", "ResourceInUseException"}
_INVALID = {"InvalidParameterValueException", "CodeStorageExceededException", "RequestTooLargeException",
            "InvalidRequestContentException", "CodeVerificationFailedException", "InvalidCodeSignatureException"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same files always give the same CodeSha256
_LOG_PAGES = 50  # bound on filter_log_events pages per logs() call


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Lambda's errors as domain errors; `action` says what was being done, for the message."""
    try:
        yield
    except ClientError as err:
        code, message = _code(err), err.response.get("Error", {}).get("Message", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code == "ResourceNotFoundException":
            raise NotFound(f"{action}: {message or 'not found'}") from err
        if code in _BUSY or status >= 500:
            raise Unavailable(f"{action}: AWS Lambda is busy ({code}); retry shortly") from err
        if code in _CONFLICT:
            raise Conflict(f"{action}: the function is being changed by another request ({message}); retry") from err
        if code in _INVALID:
            raise Invalid(f"{action}: {message}", field="config") from err
        if code in ("AccessDeniedException", "AccessDenied"):
            raise NimbusError(f"{action}: the API function is not allowed to ({message})") from err
        raise NimbusError(f"{action}: {code} {message}".strip()) from err
    except (BotoConnectionError, HTTPClientError) as err:
        raise Unavailable(f"{action}: AWS Lambda is unreachable; retry shortly") from err


class LambdaHost(FunctionHost):
    def __init__(self, settings: Settings, blobs: Blobs, *, lambda_client=None, logs_client=None,
                 sts_client=None, poll_seconds: float = 1.0, max_wait_seconds: float = 300.0,
                 sleep: Callable[[float], None] = time.sleep):
        import boto3

        self.settings = settings
        self.blobs = blobs
        self.client = lambda_client or boto3.client("lambda", region_name=settings.region)
        self._logs = logs_client
        self._sts = sts_client
        self.poll_seconds = poll_seconds
        self.max_wait_seconds = max_wait_seconds
        self._sleep = sleep
        self._role_arn: str | None = None
        self._runtime: tuple[pkg.PackageEntry, ...] | None = None

    def function_name(self, workspace: str, endpoint: str) -> str:
        return pkg.function_name(self.settings.table_name, workspace, endpoint)

    # --- deploy ------------------------------------------------------------------------------------
    def check(self, spec: DeploymentSpec) -> None:
        """The plan's own checks, and the endpoint function's package type (see _existing_function)."""
        plan = pkg.plan_function(spec, table=self.settings.table_name, bucket=self.settings.bucket,
                                 role_arn=self.role_arn())
        self._existing_function(plan)

    def deploy(self, spec: DeploymentSpec, previous: dict | None) -> HostState:
        plan = pkg.plan_function(spec, table=self.settings.table_name, bucket=self.settings.bucket,
                                 role_arn=self.role_arn())
        existing = self._existing_function(plan)
        if plan.image_uri:
            return self._deploy_image(spec, plan, existing, previous)
        if self._runtime is None:
            self._runtime = pkg.runtime_entries()
        archive = self.build_zip(pkg.package_manifest(spec, self._runtime))
        sha256 = base64.b64encode(hashlib.sha256(archive).digest()).decode("ascii")  # Lambda's CodeSha256
        key = pkg.package_key(plan.function_name, hashlib.sha256(archive).hexdigest())
        self.blobs.put_bytes(key, archive, content_type="application/zip")
        try:
            code = {"S3Bucket": self.settings.bucket, "S3Key": key}
            failure, _ = self._write_function(plan, code, existing)
            if failure:
                return HostState("Failed", error=failure, details={"function_name": plan.function_name})
            version = self._publish(plan, sha256)
        finally:
            self.blobs.delete(key)  # Lambda keeps its own copy of the code
        self._route_new_version(plan, version, (previous or {}).get("function_version"))
        self._apply_concurrency(plan)
        return HostState("Healthy", details={"function_name": plan.function_name, "function_version": version,
                                             "alias": pkg.ALIAS, "code_sha256": sha256})

    def _deploy_image(self, spec: DeploymentSpec, plan: pkg.FunctionPlan, existing: dict | None,
                      previous: dict | None) -> HostState:
        """The environment's image as the function's code; the source manifest in the bucket for its handler.
        The manifest of the version this one replaces goes once that version is deleted."""
        details = {"function_name": plan.function_name, "package_type": pkg.IMAGE, "image_uri": plan.image_uri,
                   "source_manifest": plan.source_manifest}
        old = previous or {}
        self.blobs.put_bytes(plan.source_manifest, pkg.source_manifest(spec), content_type="application/json")
        version = None
        try:
            failure, sha256 = self._write_function(plan, plan.image_code(), existing)
            if failure is None:
                version = self._publish(plan, sha256)
        finally:
            if version is None and old.get("source_manifest") != plan.source_manifest:
                self.blobs.delete(plan.source_manifest)  # no version of this revision needs it
        if failure:
            return HostState("Failed", error=failure, details=details)
        replaced = self._route_new_version(plan, version, old.get("function_version"))
        if replaced and old.get("source_manifest") not in (None, plan.source_manifest):
            self.blobs.delete(old["source_manifest"])
        self._apply_concurrency(plan)
        return HostState("Healthy", details={**details, "function_version": version, "alias": pkg.ALIAS,
                                             "code_sha256": sha256})

    def _existing_function(self, plan: pkg.FunctionPlan) -> dict | None:
        """The endpoint's function as it is, or None; Conflict when its package type is not the plan's:
        Lambda cannot change it, and every deployment of the endpoint is a version of this one function."""
        name = plan.function_name
        try:
            with _translated(f"reading function {name}"):
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

    def _write_function(self, plan: pkg.FunctionPlan, code: dict, existing: dict | None) -> tuple[str | None, str]:
        """Create the function, or update its code then its configuration: (the failure reason, if any, and
        the CodeSha256 Lambda answered for the code written)."""
        name = plan.function_name
        if existing is None:
            with _translated(f"creating function {name}"):
                created = self.client.create_function(**plan.create_function(code))
            return self._wait_until_ready(name), created.get("CodeSha256", "")
        sha256 = existing.get("CodeSha256", "")
        failure = self._wait_until_ready(name)  # an earlier update may still be in progress
        if failure is None:
            with _translated(f"updating the code of {name}"):
                sha256 = self.client.update_function_code(**plan.update_function_code(code)).get("CodeSha256", "")
            failure = self._wait_until_ready(name)
        if failure is None:
            with _translated(f"updating the configuration of {name}"):
                self.client.update_function_configuration(**plan.update_function_configuration())
            failure = self._wait_until_ready(name)
        return failure, sha256

    def _wait_until_ready(self, name: str, qualifier: str | None = None) -> str | None:
        """Poll until the function (or version) is Active with its last update done; bounded."""
        args = {"FunctionName": name, **({"Qualifier": qualifier} if qualifier else {})}
        deadline = time.monotonic() + self.max_wait_seconds
        while True:
            with _translated(f"reading function {name}"):
                config = self.client.get_function_configuration(**args)
            state, update = config.get("State", "Active"), config.get("LastUpdateStatus", "Successful")
            if state == "Failed":
                return f"Lambda could not create function {name}: {config.get('StateReason', state)}"
            if update == "Failed":
                return f"Lambda could not update function {name}: {config.get('LastUpdateStatusReason', update)}"
            if state == "Active" and update == "Successful":
                return None
            if time.monotonic() >= deadline:
                raise Unavailable(f"function {name} is still {state}/{update} after {self.max_wait_seconds:.0f} s; "
                                  "retry the deployment")
            self._sleep(self.poll_seconds)

    def _publish(self, plan: pkg.FunctionPlan, sha256: str) -> str:
        name = plan.function_name
        with _translated(f"reading function {name}"):
            current = self.client.get_function_configuration(FunctionName=name)
        held = current.get("Environment", {}).get("Variables", {})
        if current.get("CodeSha256") != sha256 or held != plan.environment:
            raise Conflict(f"function {name} was changed by another deployment of the same endpoint while "
                           "this one was being published; retry")
        with _translated(f"publishing a version of {name}"):
            published = self.client.publish_version(**plan.publish_version(sha256, current.get("RevisionId")))
        version = published["Version"]
        failure = self._wait_until_ready(name, version)
        if failure:
            raise Unavailable(failure)
        return version

    def _route_new_version(self, plan: pkg.FunctionPlan, version: str, old: str | None) -> bool:
        """A new endpoint routes everything to its first deployment; an updated deployment keeps its
        weight (its old version is swapped for the new one in the alias, then deleted). True when an old
        version was there and is gone now."""
        name = plan.function_name
        alias = self._find_alias(name)
        if alias is None:
            with _translated(f"creating alias {pkg.ALIAS} of {name}"):
                self.client.create_alias(**plan.create_alias(version))
        elif old and old != version:
            weights = dict(alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {}))
            primary = alias["FunctionVersion"]
            if primary == old or old in weights:
                if old in weights:
                    weights[version] = weights.pop(old)
                with _translated(f"updating alias {pkg.ALIAS} of {name}"):
                    self.client.update_alias(FunctionName=name, Name=pkg.ALIAS,
                                             FunctionVersion=version if primary == old else primary,
                                             RoutingConfig={"AdditionalVersionWeights": weights})
        if old and old != version:
            return self._delete_version(name, old, still_routed_ok=True)
        return False

    def _apply_concurrency(self, plan: pkg.FunctionPlan) -> None:
        reserved = plan.put_function_concurrency()
        if reserved:
            with _translated(f"reserving concurrency for {plan.function_name}"):
                self.client.put_function_concurrency(**reserved)
        provisioned = plan.put_provisioned_concurrency_config()
        if provisioned:
            with _translated(f"provisioning concurrency for {plan.function_name}:{pkg.ALIAS}"):
                self.client.put_provisioned_concurrency_config(**provisioned)

    # --- traffic -----------------------------------------------------------------------------------
    def set_traffic(self, workspace: str, endpoint: str, traffic: dict[str, int], details: dict[str, dict]) -> None:
        name = self.function_name(workspace, endpoint)
        versions = {d: (details.get(d) or {}).get("function_version") for d in traffic}
        request = pkg.update_alias(name, traffic, versions)
        # Updating an alias is atomic: requests in flight finish on the version they started on.
        try:
            with _translated(f"updating alias {pkg.ALIAS} of {name}"):
                self.client.update_alias(**request)
        except NotFound:
            with _translated(f"creating alias {pkg.ALIAS} of {name}"):
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
            with _translated(f"invoking {name}:{pkg.ALIAS}"):
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
            alias = self._find_alias(name)
            if alias is not None:
                self._unroute(name, alias, version)
            self._delete_version(name, version)
        if details.get("source_manifest"):
            self.blobs.delete(details["source_manifest"])

    def _unroute(self, name: str, alias: dict, version: str) -> None:
        """Take `version` out of the alias so it can be deleted (Lambda refuses while an alias uses it)."""
        weights = dict(alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {}))
        if alias["FunctionVersion"] == version:
            if not weights:
                with _translated(f"deleting alias {pkg.ALIAS} of {name}"):
                    self.client.delete_alias(FunctionName=name, Name=pkg.ALIAS)
                return
            primary, _ = max(weights.items(), key=lambda item: item[1])
            weights.pop(primary)
        elif version in weights:
            primary = alias["FunctionVersion"]
            weights.pop(version)
        else:
            return
        with _translated(f"updating alias {pkg.ALIAS} of {name}"):
            self.client.update_alias(FunctionName=name, Name=pkg.ALIAS, FunctionVersion=primary,
                                     RoutingConfig={"AdditionalVersionWeights": weights})

    def remove_endpoint(self, workspace: str, endpoint: str) -> None:
        name = self.function_name(workspace, endpoint)
        try:
            with _translated(f"deleting function {name}"):
                self.client.delete_function(FunctionName=name)
        except NotFound:
            pass
        self.blobs.delete_prefix(f"{pkg.SOURCE_MANIFEST_PREFIX}{name}/")  # image functions' source manifests

    def _delete_version(self, name: str, version: str, *, still_routed_ok: bool = False) -> bool:
        """True when the version is gone (deleted now or before)."""
        try:
            with _translated(f"deleting version {version} of {name}"):
                self.client.delete_function(FunctionName=name, Qualifier=version)
        except NotFound:
            pass
        except Conflict:
            # Only when replacing a version: Lambda keeps a version an alias still routes to, and a
            # version left behind costs storage, not correctness.
            if not still_routed_ok:
                raise
            return False
        return True

    def _find_alias(self, name: str) -> dict | None:
        try:
            with _translated(f"reading alias {pkg.ALIAS} of {name}"):
                return self.client.get_alias(FunctionName=name, Name=pkg.ALIAS)
        except NotFound:
            return None

    # --- logs --------------------------------------------------------------------------------------
    def logs(self, workspace: str, endpoint: str, deployment: str, details: dict, tail: int) -> str:
        version = (details or {}).get("function_version")
        if not version or tail <= 0:
            return ""
        group = f"/aws/lambda/{self.function_name(workspace, endpoint)}"
        client = self._logs_client()
        marker = f"[{version}]"  # Lambda names streams YYYY/MM/DD/[<version>]<instance id>
        try:
            with _translated(f"reading the log streams of {group}"):
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
            with _translated(f"reading the logs of {group}"):
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
            import boto3

            self._logs = boto3.client("logs", region_name=self.settings.region)
        return self._logs

    def role_arn(self) -> str:
        """NIMBUS_SCORING_ROLE_ARN holds an ARN, or a role name (the stage config cannot know the account):
        a name is completed with this account's id from sts:GetCallerIdentity, which needs no permission."""
        configured = self.settings.scoring_role_arn
        if not configured or configured.startswith("arn:"):
            return configured
        if self._role_arn is None:
            import boto3

            sts = self._sts or boto3.client("sts", region_name=self.settings.region)
            with _translated("reading this account's id"):
                caller = sts.get_caller_identity()
            partition = caller["Arn"].split(":")[1]
            self._role_arn = f"arn:{partition}:iam::{caller['Account']}:role/{configured}"
        return self._role_arn
