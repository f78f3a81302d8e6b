"""AWS Batch adapters: sends what batch_spec.py plans.

`BatchProvisioner` creates (or attaches) a batch target's compute environment and job queue and deletes
what it created. `BatchDispatcher` is the Dispatcher port on Batch: one job per run, recorded on the run
(`job`) and in the `BATCHJOBS` partition that the reconciler's sweep reads (see services/reconcile.py).

Batch throttles its control plane hard (a few requests per second per account): throttling and 5xx are
retried with jittered exponential back-off, then reported as Unavailable. KMS calls (sealing run tokens)
go through the same back-off, with errors of their own.
"""
from __future__ import annotations

import json
import logging
import random
import time
from typing import Any, Callable

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

from chalicelib.compute import batch_spec as spec_module
from chalicelib.compute.batch_spec import BatchRoles
from chalicelib.compute.dispatcher import Dispatcher, JobSpec
from chalicelib.errors import Conflict, Invalid, NimbusError, NotFound, Unavailable
from chalicelib.services import keys
from chalicelib.services.runs import ACTIVE, Runs
from chalicelib.settings import Settings
from chalicelib.store.table import ConditionFailed, Key, Put, Update, all_of, attr_in, item_exists
from nimbus import sealed_token

logger = logging.getLogger(__name__)

BATCH_JOBS_PK = "BATCHJOBS"  # one item per run handed to Batch and not yet swept as ended: sk = run id
_BUSY = ("CREATING", "UPDATING", "DELETING")  # a compute environment or queue that takes no change now
_THROTTLED = {"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}


def batch_job_key(run_id: str) -> Key:
    return Key(BATCH_JOBS_PK, run_id)


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _retryable(err: BaseException) -> bool:
    if isinstance(err, (BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return _code(err) in _THROTTLED or status >= 500
    return False


def _translate(action: str, err: BaseException, field: str | None = None) -> NimbusError:
    if _retryable(err):
        return Unavailable(f"{action}: AWS Batch is busy or unreachable; retry shortly")
    assert isinstance(err, ClientError)
    code, message = _code(err), err.response.get("Error", {}).get("Message", "")
    if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
        return NimbusError(f"{action}: the API is not allowed to ({message}); its policy grants Batch resources "
                           "named after the stage's table only")
    if code == "ClientException":  # Batch's answer to any bad request: a missing queue, a bad setting
        return Invalid(f"{action}: {message}", field=field)
    return NimbusError(f"{action}: {code} {message}".strip())


def _translate_kms(action: str, err: BaseException, field: str | None = None) -> NimbusError:
    """KMS's errors while sealing a run token: none is the request's fault, so none is Invalid."""
    if _retryable(err) or not isinstance(err, ClientError):
        return Unavailable(f"{action}: AWS KMS is busy or unreachable; retry shortly")
    code, message = _code(err), err.response.get("Error", {}).get("Message", "")
    if code in ("AccessDeniedException", "AccessDenied"):
        return NimbusError(f"{action}: the API is not allowed to ({message}); its policy grants kms:Encrypt "
                           "through the stage's run token key alias (NIMBUS_RUN_TOKEN_KEY) only")
    if code in ("NotFoundException", "DisabledException", "KMSInvalidStateException", "InvalidKeyUsageException"):
        return NimbusError(f"{action}: the run token key (NIMBUS_RUN_TOKEN_KEY) is not usable: {code} {message}")
    return NimbusError(f"{action}: {code} {message}".strip())


class _Calls:
    """AWS calls with back-off on throttling; `sleep` and `rng` are injectable for tests. `translate` turns
    the service's final error into a domain error (default: Batch's)."""

    def __init__(self, client, attempts: int, sleep: Callable[[float], None], rng: random.Random,
                 base_delay: float = 0.5, max_delay: float = 8.0,
                 translate: Callable[..., NimbusError] | None = None):
        # `client`: a client, or a function making one on first use (keeps cold starts short)
        self._client, self.attempts, self.sleep, self.rng = client, attempts, sleep, rng
        self.base_delay, self.max_delay = base_delay, max_delay
        self.translate = translate or _translate

    def __call__(self, operation: str, action: str, *, field: str | None = None, **kwargs: Any) -> dict:
        for attempt in range(self.attempts):
            try:
                return getattr(self.client(), operation)(**kwargs)
            except (ClientError, BotoConnectionError, HTTPClientError) as err:
                if not _retryable(err) or attempt == self.attempts - 1:
                    raise self.translate(action, err, field) from err
                # Full jitter: callers throttled together do not come back together.
                delay = min(self.max_delay, self.base_delay * 2 ** attempt)
                self.sleep(self.rng.uniform(delay / 2, delay))
        raise AssertionError("unreachable")

    def client(self):
        if callable(self._client) and not hasattr(self._client, "meta"):
            self._client = self._client()
        return self._client


def _aws_client(settings: Settings, client, service: str = "batch"):
    """The given client, or a function that makes one (of `service`) when first needed."""
    if client is not None:
        return client

    def make():
        import boto3

        return boto3.client(service, region_name=settings.region)

    return make


class _RoleArns:
    """Settings hold role ARNs or names (the stage config cannot know the account id): a name is completed
    with this account's id from sts:GetCallerIdentity, which needs no permission."""

    def __init__(self, settings: Settings, sts_client=None):
        self.settings, self._sts, self._prefix = settings, sts_client, None

    def roles(self) -> BatchRoles:
        s = self.settings
        return BatchRoles(self._arn("role", s.batch_job_role_arn), self._arn("role", s.batch_execution_role_arn),
                          self._arn("instance-profile", s.batch_instance_role_arn),
                          self._arn("role", s.batch_service_role_arn))

    def _arn(self, kind: str, configured: str) -> str:
        if not configured or configured.startswith("arn:"):
            return configured
        if self._prefix is None:
            import boto3

            sts = self._sts or boto3.client("sts", region_name=self.settings.region)
            try:
                caller = sts.get_caller_identity()
            except (ClientError, BotoConnectionError, HTTPClientError) as err:
                raise Unavailable("reading this account's id failed; retry shortly") from err
            self._prefix = f"arn:{caller['Arn'].split(':')[1]}:iam::{caller['Account']}"
        return f"{self._prefix}:{kind}/{configured}"


# --- provisioning ---------------------------------------------------------------------------------


class BatchProvisioner:
    """A batch target's cluster: created by Nimbus (and then deleted by it), or an existing queue attached.

    Creating one takes minutes, so it is done in steps that never wait (the service's state machine calls
    them: services/compute_targets.py): `start` asks for the compute environment, `status` tells whether
    the resource in progress is ready, `create_queue` makes the queue once the compute environment is
    VALID, and `dismantle` takes down a step of what was made. `create` and `delete` do the whole job and
    wait (bounded by `max_wait_seconds`) for scripts, tests and the target delete.
    """

    def __init__(self, settings: Settings, batch_client=None, *, sts_client=None, poll_seconds: float = 2.0,
                 max_wait_seconds: float = 300.0, sleep: Callable[[float], None] = time.sleep,
                 attempts: int = 6, rng: random.Random | None = None):
        self.settings = settings
        self.call = _Calls(_aws_client(settings, batch_client), attempts, sleep, rng or random.Random())
        self.roles = _RoleArns(settings, sts_client)
        self.poll_seconds, self.max_wait_seconds, self._sleep = poll_seconds, max_wait_seconds, sleep

    # --- the steps ----------------------------------------------------------------------------------
    def start(self, workspace: str, name: str, settings: dict) -> dict:
        """An attached queue: validated, its resources complete (`created` False). Otherwise the compute
        environment is asked for and its resources returned without a queue (`created` True)."""
        if settings.get("job_queue_arn"):
            return self.attach(settings["job_queue_arn"])
        request = spec_module.create_compute_environment(self.settings.table_name, workspace, name, settings,
                                                         self.roles.roles())
        created = self.call("create_compute_environment", "creating the compute environment",
                            field="settings", **request)
        return {"compute_environment_arn": created["computeEnvironmentArn"], "name": request["computeEnvironmentName"],
                "created": True, "platform": request["computeResources"]["type"]}

    def find_started(self, workspace: str, name: str) -> dict | None:
        """The resources of a compute environment a `start` made but could not record (found by its
        name), or None when there is none."""
        resource = spec_module.resource_name(self.settings.table_name, workspace, name)
        environment = self._describe_ce(resource)
        if environment is None:
            return None
        platform = (environment.get("computeResources") or {}).get("type", spec_module.EC2)
        return {"compute_environment_arn": environment["computeEnvironmentArn"], "name": resource, "created": True,
                "platform": spec_module.FARGATE if platform.startswith("FARGATE") else spec_module.EC2}

    def status(self, resources: dict) -> tuple[str, str | None]:
        """Of the resource in progress (the queue once there is one, else the compute environment):
        ("waiting", None), ("ready", None) or ("failed", Batch's reason)."""
        if resources.get("job_queue_arn"):
            what, current = "job queue", self._describe_queue(resources["job_queue_arn"])
        else:
            what, current = "compute environment", self._describe_ce(resources["compute_environment_arn"])
        if current is None:
            return "failed", f"the {what} disappeared"
        status = current.get("status")
        if status in ("CREATING", "UPDATING"):
            return "waiting", None
        if status == "VALID":
            return "ready", None
        return "failed", f"the {what} is {status}: {current.get('statusReason') or 'no reason given'}"

    def create_queue(self, workspace: str, name: str, resources: dict) -> str:
        """The queue's ARN: made now, or found when an earlier call made it and its answer was lost."""
        request = spec_module.create_job_queue(self.settings.table_name, workspace, name,
                                               resources["compute_environment_arn"])
        existing = self._describe_queue(request["jobQueueName"])
        if existing is not None:
            return existing["jobQueueArn"]
        return self.call("create_job_queue", "creating the job queue", field="settings", **request)["jobQueueArn"]

    def dismantle(self, resources: dict) -> bool:
        """Takes down what Nimbus made, as far as it goes without waiting (disable, then delete, the queue,
        then the compute environment); True once nothing is left. Attached queues are left alone."""
        if not resources.get("created"):
            return True
        for _ in range(6):  # a step whose effect is immediate is followed by the next at once
            progress = self._dismantle_step(resources)
            if progress != "progress":
                return progress == "done"
        return False

    def _dismantle_step(self, resources: dict) -> str:
        queue_ref = resources.get("job_queue_arn") or resources.get("name")
        queue = self._describe_queue(queue_ref) if queue_ref else None
        if queue is not None:
            return self._take_down(queue, "job queue", "jobQueue", queue_ref)
        environment_ref = resources.get("compute_environment_arn") or resources.get("name")
        environment = self._describe_ce(environment_ref) if environment_ref else None
        if environment is None:
            return "done"
        return self._take_down(environment, "compute environment", "computeEnvironment", environment_ref)

    def _take_down(self, current: dict, what: str, parameter: str, ref: str) -> str:
        if current.get("status") in _BUSY:
            return "busy"
        operation = "job_queue" if parameter == "jobQueue" else "compute_environment"
        if current.get("state") != "DISABLED":
            self.call(f"update_{operation}", f"disabling the {what}", **{parameter: ref, "state": "DISABLED"})
        else:
            self.call(f"delete_{operation}", f"deleting the {what}", **{parameter: ref})
        return "progress"

    # --- the whole job, waiting -------------------------------------------------------------------
    def create(self, workspace: str, name: str, settings: dict) -> dict:
        """start → compute environment VALID → queue; what was made goes with a failure."""
        resources = self.start(workspace, name, settings)
        if not resources["created"]:
            return resources
        try:
            self._wait_until_ready(resources)
            resources = {**resources, "job_queue_arn": self.create_queue(workspace, name, resources)}
        except BaseException:
            # No orphan: what this call made goes with its failure (a failed cleanup is logged, and the
            # original error is the one reported).
            try:
                self.delete(resources)
            except NimbusError:
                pass
            raise
        return resources

    def attach(self, job_queue_arn: str) -> dict:
        found = self.call("describe_job_queues", "reading the job queue", field="settings.job_queue_arn",
                          jobQueues=[job_queue_arn])["jobQueues"]
        if not found:
            raise Invalid(f"job queue {job_queue_arn} not found in this account and region",
                          field="settings.job_queue_arn")
        queue = found[0]
        if queue.get("state") != "ENABLED":
            raise Invalid(f"job queue {job_queue_arn} is {queue.get('state')}: enable it first",
                          field="settings.job_queue_arn")
        return {"job_queue_arn": queue["jobQueueArn"], "created": False, "platform": self._platform(queue)}

    def _platform(self, queue: dict) -> str:
        arns = [entry["computeEnvironment"] for entry in queue.get("computeEnvironmentOrder") or []]
        if not arns:
            return spec_module.EC2
        environments = self.call("describe_compute_environments", "reading the queue's compute environments",
                                 computeEnvironments=arns)["computeEnvironments"]
        kinds = {(ce.get("computeResources") or {}).get("type", "EC2") for ce in environments}
        return spec_module.FARGATE if kinds and all(k.startswith("FARGATE") for k in kinds) else spec_module.EC2

    def delete(self, resources: dict) -> None:
        """Disable then delete the queue, then the compute environment, waiting for each; attached queues
        are left alone. A queue made but never recorded is found by its name."""
        if not resources.get("created"):
            return
        queue = resources.get("job_queue_arn") or resources.get("name")
        if queue:
            self._delete_job_queue(queue)
        environment = resources.get("compute_environment_arn") or resources.get("name")
        if environment:
            self._delete_compute_environment(environment)

    # --- waiting steps ----------------------------------------------------------------------------
    def _delete_job_queue(self, arn: str) -> None:
        queue = self._describe_queue(arn)
        if queue is None:
            return
        if queue.get("state") != "DISABLED":
            self._settled(lambda: self._describe_queue(arn), "job queue")
            self.call("update_job_queue", "disabling the job queue", jobQueue=arn, state="DISABLED")
        self._settled(lambda: self._describe_queue(arn), "job queue")
        self.call("delete_job_queue", "deleting the job queue", jobQueue=arn)
        # The compute environment cannot go while a queue still names it.
        self._settled(lambda: self._describe_queue(arn), "job queue", until_gone=True)

    def _delete_compute_environment(self, arn: str) -> None:
        try:
            environment = self._describe_ce(arn)
            if environment is None:
                return
            if environment.get("state") != "DISABLED":
                self._settled(lambda: self._describe_ce(arn), "compute environment")
                self.call("update_compute_environment", "disabling the compute environment",
                          computeEnvironment=arn, state="DISABLED")
            self._settled(lambda: self._describe_ce(arn), "compute environment")
            self.call("delete_compute_environment", "deleting the compute environment", computeEnvironment=arn)
        except NimbusError:
            logger.error("compute environment %s could not be deleted; delete it by hand", arn)
            raise

    def _wait_until_ready(self, resources: dict) -> None:
        deadline = time.monotonic() + self.max_wait_seconds
        while True:
            phase, reason = self.status(resources)
            if phase == "ready":
                return
            if phase == "failed":
                raise Invalid(f"the compute environment is not usable: {reason}", field="settings")
            if time.monotonic() >= deadline:
                raise Unavailable(f"the compute environment is still being created after "
                                  f"{self.max_wait_seconds:.0f} s; retry later")
            self._sleep(self.poll_seconds)

    def _describe_ce(self, arn: str) -> dict | None:
        found = self.call("describe_compute_environments", "reading the compute environment",
                          computeEnvironments=[arn])["computeEnvironments"]
        return found[0] if found and found[0].get("status") != "DELETED" else None

    def _describe_queue(self, arn: str) -> dict | None:
        found = self.call("describe_job_queues", "reading the job queue", jobQueues=[arn])["jobQueues"]
        return found[0] if found and found[0].get("status") != "DELETED" else None

    def _settled(self, describe: Callable[[], dict | None], what: str, until_gone: bool = False) -> dict | None:
        """Poll until the resource is no longer CREATING/UPDATING/DELETING (or gone); bounded."""
        deadline = time.monotonic() + self.max_wait_seconds
        while True:
            current = describe()
            busy = current is not None and (until_gone or current.get("status") in _BUSY)
            if not busy:
                return current
            if time.monotonic() >= deadline:
                raise Unavailable(f"the {what} is still {current.get('status')} after {self.max_wait_seconds:.0f} s; "
                                  "retry later")
            self._sleep(self.poll_seconds)


# --- dispatch -------------------------------------------------------------------------------------


class BatchDispatcher(Dispatcher):
    """Submits a run as a Batch job. `mint_token(run_id, workspace, user)` gives the run's token (default:
    Identity.create_run_token); `api_url` is where the job reaches the API (default: settings.api_url).

    With `settings.run_token_key` the token is sealed with KMS for its run (nimbus/sealed_token.py) and the
    job's environment carries NIMBUS_RUN_TOKEN_SEALED only; a token that cannot be sealed fails the run
    and submits nothing. Without a key (off AWS, or a stage set up without one) it goes in clear."""

    def __init__(self, services_or_ctx, settings: Settings, batch_client=None, *,
                 mint_token: Callable[[str, str, str], str] | None = None, api_url: str | None = None,
                 sts_client=None, kms_client=None, sleep: Callable[[float], None] = time.sleep, attempts: int = 6,
                 rng: random.Random | None = None):
        from chalicelib.services.identity import Identity

        self.ctx = getattr(services_or_ctx, "ctx", services_or_ctx)
        self.settings = settings
        rng = rng or random.Random()
        self.call = _Calls(_aws_client(settings, batch_client), attempts, sleep, rng)
        self.kms_call = _Calls(_aws_client(settings, kms_client, "kms"), attempts, sleep, rng,
                               translate=_translate_kms)
        self.roles = _RoleArns(settings, sts_client)
        self.runs = Runs(self.ctx)
        self.mint_token = mint_token or Identity(self.ctx).create_run_token
        self.api_url = (api_url or settings.api_url).rstrip("/")
        self._definitions: dict[str, str] = {}  # request (JSON) -> ARN of a revision known to match

    def submit(self, spec: JobSpec) -> None:
        run = self.runs.get(spec.workspace, spec.run_id)
        if run["status"] != "Queued":
            return  # canceled (or failed) before it reached Batch
        try:
            job = self._submit(spec, run)
        except NimbusError as err:
            self._fail(spec, f"submitting the run to AWS Batch failed: {err.message}")
            raise
        self._record(spec, job)

    def _submit(self, spec: JobSpec, run: dict) -> dict:
        queue = ((spec.target or {}).get("resources") or {}).get("job_queue_arn")
        if not queue:
            raise Invalid(f"compute target {spec.compute!r} has no job queue", field="run_config.compute")
        if not self.api_url:
            raise NimbusError("NIMBUS_API_URL is not set: a Batch job would not know where the API is")
        definition = spec_module.register_job_definition(spec, table=self.settings.table_name,
                                                         default_image=self.settings.runner_image,
                                                         roles=self.roles.roles())
        definition_arn = self._job_definition(definition)
        token = self.mint_token(spec.run_id, spec.workspace, run["submitted_by"])
        if self.settings.run_token_key:
            carried = {"sealed_run_token": self._seal(spec.run_id, token)}
        else:
            carried = {"run_token": token}
        request = spec_module.submit_job(spec, job_queue=queue, job_definition=definition_arn, api_url=self.api_url,
                                         experiment=run["experiment"], **carried)
        submitted = self.call("submit_job", "submitting the job", field="run_config", **request)
        return {"type": "batch", "job_id": submitted["jobId"], "job_name": submitted["jobName"], "job_queue": queue}

    def _seal(self, run_id: str, token: str) -> str:
        """The token encrypted for this run with the stage's key (base64), opened by the job's runner."""
        request = sealed_token.encrypt_request(self.settings.run_token_key, run_id, token)
        return sealed_token.sealed_value(self.kms_call("encrypt", "sealing the run token", **request))

    def _job_definition(self, request: dict) -> str:
        """The ARN of an ACTIVE revision with these properties; registers one when none has them."""
        cache_key = json.dumps(request, sort_keys=True)
        if cache_key in self._definitions:
            return self._definitions[cache_key]
        arn, token = None, None
        while arn is None:
            page = self.call("describe_job_definitions", "reading the job definitions",
                             jobDefinitionName=request["jobDefinitionName"], status="ACTIVE",
                             **({"nextToken": token} if token else {}))
            for existing in sorted(page["jobDefinitions"], key=lambda d: -d.get("revision", 0)):
                if spec_module.same_definition(existing, request):
                    arn = existing["jobDefinitionArn"]
                    break
            token = page.get("nextToken")
            if not token:
                break
        if arn is None:
            arn = self.call("register_job_definition", "registering the job definition", field="run_config",
                            **request)["jobDefinitionArn"]
        self._definitions[cache_key] = arn
        return arn

    def _record(self, spec: JobSpec, job: dict) -> None:
        """The job on the run and in the sweep's partition, only while the run is still active."""
        entry = batch_job_key(spec.run_id)
        try:
            self.ctx.table.transact([
                Update(keys.run(spec.run_id), set={"job": job},
                       condition=all_of(item_exists(), attr_in("status", ACTIVE))),
                Put({"pk": entry.pk, "sk": entry.sk, "entity": "batch_job", "workspace": spec.workspace,
                     "job_id": job["job_id"], "created": self.ctx.now()}),
            ])
        except ConditionFailed:  # canceled while it was being submitted: the job must not run on
            self._terminate(job["job_id"], "the run ended before its job started")

    def _fail(self, spec: JobSpec, message: str) -> None:
        try:
            self.runs.transition(spec.workspace, spec.run_id, "Failed", {"message": message})
        except (Conflict, NotFound):
            pass  # it ended meanwhile: that outcome stands

    def cancel(self, run_id: str) -> bool:
        run = self.ctx.table.get_item(keys.run(run_id)) if run_id.isalnum() else None
        job = (run or {}).get("job") or {}
        if job.get("type") != "batch":
            return False
        self._terminate(job["job_id"], "canceled in Nimbus")
        return True

    def _terminate(self, job_id: str, reason: str) -> None:
        try:
            self.call("terminate_job", "stopping the job", jobId=job_id, reason=reason)
        except Invalid:
            pass  # Batch no longer knows the job: nothing left to stop


def describe_jobs(call: _Calls | Callable[..., dict], job_ids: list[str]) -> dict[str, dict]:
    """Batch's view of these jobs, 100 per request; a job it no longer knows is absent from the answer."""
    found: dict[str, dict] = {}
    for start in range(0, len(job_ids), 100):
        for job in call("describe_jobs", "reading jobs", jobs=job_ids[start:start + 100])["jobs"]:
            found[job["jobId"]] = job
    return found


def calls(client, *, sleep: Callable[[float], None] = time.sleep, attempts: int = 6) -> _Calls:
    """Throttle-tolerant Batch calls for other modules (the reconciler)."""
    return _Calls(client, attempts, sleep, random.Random())

