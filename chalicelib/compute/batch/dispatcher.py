"""AWS Batch dispatch: sends what spec.py plans.

`BatchDispatcher` is the Dispatcher port on Batch: one job per run, recorded on the run (`job`) and in
the `BATCHJOBS` partition that the reconciler's sweep reads (see compute/batch/reconciliation.py). Its calls, and
the KMS calls that seal run tokens, go through calls.py (errors as domain errors). A batch target's cluster is
made by provisioner.py.
"""
from __future__ import annotations

import json
import logging
from typing import Callable
from botocore.exceptions import ClientError

from chalicelib.compute.batch import spec as spec_module
from chalicelib.compute.batch.calls import Calls, RoleArns, error_code, lazy_client, retryable
from chalicelib.compute.dispatcher import Dispatcher, RunCallbacks
from chalicelib.errors import Invalid, NimbusError, Unavailable
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.settings import Settings
from chalicelib.store.table import ConditionFailed, Key, Put, Update, all_of, attr_in, item_exists
from nimbus.runtime.job_spec import JobSpec
from nimbus.runtime.run_states import ACTIVE
from nimbus.runtime import sealed_token

logger = logging.getLogger(__name__)

BATCH_JOBS_PK = "BATCHJOBS"  # one item per run handed to Batch and not yet swept as ended: sk = run id


def batch_job_key(run_id: str) -> Key:
    return Key(BATCH_JOBS_PK, run_id)


def _translate_kms(action: str, err: BaseException, field: str | None = None) -> NimbusError:
    """KMS's errors while sealing a run token: none is the request's fault, so none is Invalid."""
    if retryable(err) or not isinstance(err, ClientError):
        return Unavailable(f"{action}: AWS KMS is busy or unreachable; retry shortly")
    code, message = error_code(err), err.response.get("Error", {}).get("Message", "")
    if code in ("AccessDeniedException", "AccessDenied"):
        return NimbusError(f"{action}: the API is not allowed to ({message}); its policy grants kms:Encrypt "
                           "through the stage's run token key alias (NIMBUS_RUN_TOKEN_KEY) only")
    if code in ("NotFoundException", "DisabledException", "KMSInvalidStateException", "InvalidKeyUsageException"):
        return NimbusError(f"{action}: the run token key (NIMBUS_RUN_TOKEN_KEY) is not usable: {code} {message}")
    return NimbusError(f"{action}: {code} {message}".strip())


class BatchDispatcher(Dispatcher):
    """Submits a run as a Batch job, reading the run and minting its token through `runs` (the callbacks the
    services hand it); `api_url` is where the job reaches the API (default: settings.api_url).

    With `settings.run_token_key` the token is sealed with KMS for its run (nimbus/runtime/sealed_token.py) and the
    job's environment carries NIMBUS_RUN_TOKEN_SEALED only; a token that cannot be sealed fails the run
    and submits nothing. Without a key (off AWS, or a stage set up without one) it goes in clear."""

    def __init__(self, ctx: Context, runs: RunCallbacks, settings: Settings, batch_client=None, *,
                 api_url: str | None = None, sts_client=None, kms_client=None):
        self.ctx = ctx
        self.runs = runs
        self.settings = settings
        self.call = Calls(lazy_client(settings, batch_client))
        self.kms_call = Calls(lazy_client(settings, kms_client, "kms"), translate=_translate_kms)
        self.roles = RoleArns(settings, sts_client)
        self.api_url = (api_url or settings.api_url).rstrip("/")
        self._definitions: dict[str, str] = {}  # request (JSON) -> ARN of a revision known to match

    def submit(self, spec: JobSpec) -> None:
        run = self.runs.get_run(spec.workspace, spec.run_id)
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
        token = self.runs.mint_run_token(spec.run_id, spec.workspace, run["submitted_by"])
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
                Update(table_keys.run(spec.run_id), set={"job": job},
                       condition=all_of(item_exists(), attr_in("status", ACTIVE))),
                Put({"pk": entry.pk, "sk": entry.sk, "entity": "batch_job", "workspace": spec.workspace,
                     "job_id": job["job_id"], "created": self.ctx.now()}),
            ])
        except ConditionFailed:  # canceled while it was being submitted: the job must not run on
            self._terminate(job["job_id"], "the run ended before its job started")

    def _fail(self, spec: JobSpec, message: str) -> None:
        self.runs.fail_run(spec.workspace, spec.run_id, {"message": message})  # False: its own end stands

    def cancel(self, run_id: str) -> bool:
        run = self.ctx.table.get_item(table_keys.run(run_id)) if run_id.isalnum() else None
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


def describe_jobs(call: Calls | Callable[..., dict], job_ids: list[str]) -> dict[str, dict]:
    """Batch's view of these jobs, 100 per request; a job it no longer knows is absent from the answer."""
    found: dict[str, dict] = {}
    for start in range(0, len(job_ids), 100):
        for job in call("describe_jobs", "reading jobs", jobs=job_ids[start:start + 100])["jobs"]:
            found[job["jobId"]] = job
    return found
