"""The Batch adapters against moto: provisioning, submitting, recording, throttling, canceling, sealing tokens."""
from __future__ import annotations

import dataclasses

import pytest

from chalicelib.compute.batch import dispatcher as batch
from chalicelib.compute.batch.dispatcher import BatchDispatcher
from chalicelib.compute.batch.provisioner import BatchProvisioner
from chalicelib.services.run_callbacks import run_callbacks
from chalicelib.errors import Invalid, NimbusError, Unavailable
from nimbus.runtime.job_spec import JobSpec
from nimbus.runtime import sealed_token
from tests.server.unit.batch_helpers import make_account, throttled


@pytest.fixture
def account(aws_env):
    return make_account()


def provisioner(account, **kwargs) -> BatchProvisioner:
    return BatchProvisioner(account.settings, account.batch, sleep=account.sleeps.append, poll_seconds=0, **kwargs)


def dispatcher(account, **kwargs) -> BatchDispatcher:
    return BatchDispatcher(account.services.ctx, run_callbacks(account.services.ctx), account.settings, account.batch,
                           **kwargs)


def batch_target(account, provisioning="EC2") -> dict:
    settings = account.network(provisioning)
    resources = provisioner(account).create("team", "gpu", settings)
    return {"name": "gpu", "type": "batch", "settings": settings, "resources": resources, "state": "Succeeded"}


def spec_of(run: dict, target: dict, **more) -> JobSpec:
    return JobSpec(run["id"], "team", 3600, compute=target["name"], target=target, **more)


# --- provisioning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provisioning", ["EC2", "FARGATE"])
def test_create_makes_a_valid_environment_and_queue_and_delete_removes_both(account, provisioning):
    resources = provisioner(account).create("team", "gpu", account.network(provisioning))
    assert resources["created"] is True and resources["platform"] == provisioning
    (ce,) = account.batch.describe_compute_environments(
        computeEnvironments=[resources["compute_environment_arn"]])["computeEnvironments"]
    assert ce["computeEnvironmentName"] == "nimbus-test-team-gpu" and ce["status"] == "VALID"
    assert ce["computeResources"]["type"] == provisioning
    (queue,) = account.batch.describe_job_queues(jobQueues=[resources["job_queue_arn"]])["jobQueues"]
    assert queue["computeEnvironmentOrder"][0]["computeEnvironment"] == resources["compute_environment_arn"]

    provisioner(account).delete(resources)
    assert account.batch.describe_job_queues(jobQueues=[resources["job_queue_arn"]])["jobQueues"] == []
    assert account.batch.describe_compute_environments(
        computeEnvironments=[resources["compute_environment_arn"]])["computeEnvironments"] == []
    provisioner(account).delete(resources)  # deleting again finds nothing to do


def test_a_failed_queue_creation_leaves_no_compute_environment_behind(account):
    def refuse(**kwargs):
        raise Exception("the queue could not be made")  # anything at all, not only Batch's errors

    account.batch.create_job_queue = refuse
    with pytest.raises(Exception, match="could not be made"):
        provisioner(account).create("team", "gpu", account.network())
    assert account.batch.describe_compute_environments()["computeEnvironments"] == []


def test_attach_validates_the_queue_and_delete_leaves_it_alone(account):
    made = provisioner(account).create("team", "shared", account.network("FARGATE"))
    attached = provisioner(account).create("team", "gpu", {"job_queue_arn": made["job_queue_arn"]})
    assert attached == {"job_queue_arn": made["job_queue_arn"], "created": False, "platform": "FARGATE"}
    provisioner(account).delete(attached)
    assert account.batch.describe_job_queues(jobQueues=[made["job_queue_arn"]])["jobQueues"]
    with pytest.raises(Invalid) as missing:
        provisioner(account).create("team", "gpu", {
            "job_queue_arn": "arn:aws:batch:us-east-1:123456789012:job-queue/none"})
    assert missing.value.field == "settings.job_queue_arn"


def test_an_ec2_environment_without_an_instance_profile_is_refused_before_any_call(aws_env):
    account = make_account(batch_instance_role_arn="")
    with pytest.raises(Invalid, match="NIMBUS_BATCH_INSTANCE_ROLE_ARN"):
        provisioner(account).create("team", "gpu", account.network())
    assert account.batch.describe_compute_environments()["computeEnvironments"] == []


def test_the_steps_start_wait_make_the_queue_once_and_take_everything_down(account):
    steps = provisioner(account)
    started = steps.start("team", "gpu", account.network("FARGATE"))
    assert started["created"] is True and started["name"] == "nimbus-test-team-gpu" and "job_queue_arn" not in started
    assert steps.find_started("team", "gpu") == {**started, "platform": "FARGATE"}
    assert steps.find_started("team", "other") is None
    assert steps.status(started) == ("ready", None)

    queue = steps.create_queue("team", "gpu", started)
    assert steps.create_queue("team", "gpu", started) == queue  # an answer lost: the same queue, not a second
    assert len(account.batch.describe_job_queues()["jobQueues"]) == 1
    made = {**started, "job_queue_arn": queue}
    assert steps.status(made) == ("ready", None)

    # A queue made but never recorded is found by its name when the rest is taken down
    assert steps.dismantle(started) is True
    assert account.batch.describe_job_queues()["jobQueues"] == []
    assert account.batch.describe_compute_environments()["computeEnvironments"] == []
    assert steps.status(made)[0] == "failed" and "disappeared" in steps.status(made)[1]


def test_status_waits_while_batch_works_and_reports_its_reason(account):
    steps = provisioner(account)
    started = steps.start("team", "gpu", account.network())
    real = account.batch.describe_compute_environments
    shown = {"status": "CREATING"}

    def described(**kwargs):
        answer = real(**kwargs)
        for environment in answer["computeEnvironments"]:
            environment.update(shown)
        return answer

    account.batch.describe_compute_environments = described
    assert steps.status(started) == ("waiting", None)
    shown.update(status="INVALID", statusReason="CLIENT_ERROR - subnet-1 does not exist")
    assert steps.status(started) == ("failed", "the compute environment is INVALID: CLIENT_ERROR - subnet-1 does not exist")

    # Taking it down never waits: while Batch is busy with it, nothing is asked and False is answered
    shown.update(status="UPDATING")
    calls = []
    account.batch.update_compute_environment = lambda **kwargs: calls.append(kwargs)
    assert steps.dismantle(started) is False and calls == []
    shown.update(status="INVALID")
    account.batch.update_compute_environment = lambda **kwargs: (calls.append(kwargs), shown.update(
        status="UPDATING", state="DISABLED"))[0] or {}
    assert steps.dismantle(started) is False
    assert calls == [{"computeEnvironment": started["compute_environment_arn"], "state": "DISABLED"}]


# --- submitting -----------------------------------------------------------------------------------


def test_submit_records_the_job_on_the_run_and_for_the_sweep(account):
    target = batch_target(account)
    run = account.queued_run(target)
    minted = []

    def mint(run_id, workspace, user):
        minted.append((run_id, workspace, user))
        return "nrt_token"

    callbacks = dataclasses.replace(run_callbacks(account.services.ctx), mint_run_token=mint)
    BatchDispatcher(account.services.ctx, callbacks, account.settings, account.batch).submit(spec_of(run, target))

    job = account.services.runs.get("team", run["id"])["job"]
    assert job["type"] == "batch" and job["job_name"] == f"nimbus-team-{run['id']}"
    assert job["job_queue"] == target["resources"]["job_queue_arn"]
    assert minted == [(run["id"], "team", "admin")]
    entry = account.services.ctx.table.get_item(batch.batch_job_key(run["id"]))
    assert entry["workspace"] == "team" and entry["job_id"] == job["job_id"]
    (described,) = account.batch.describe_jobs(jobs=[job["job_id"]])["jobs"]
    assert described["tags"] == {"nimbus:workspace": "team", "nimbus:run": run["id"], "nimbus:experiment": "mnist"}
    assert described["jobQueue"] == target["resources"]["job_queue_arn"]
    env = {e["name"]: e["value"] for e in described["container"]["environment"]}
    assert env["NIMBUS_RUN_TOKEN"] == "nrt_token" and env["NIMBUS_URL"] == "https://api.example/api"
    (definition,) = account.batch.describe_job_definitions(jobDefinitions=[described["jobDefinition"]])["jobDefinitions"]
    assert definition["containerProperties"]["jobRoleArn"] == "arn:aws:iam::123456789012:role/job"  # name completed


def test_the_default_token_is_a_real_run_token(account):
    target = batch_target(account)
    run = account.queued_run(target)
    dispatcher(account).submit(spec_of(run, target))
    (described,) = account.batch.describe_jobs(jobs=[account.services.runs.get("team", run["id"])["job"]["job_id"]])["jobs"]
    token = {e["name"]: e["value"] for e in described["container"]["environment"]}["NIMBUS_RUN_TOKEN"]
    assert account.services.identity.authenticate(f"Bearer {token}").run_id == run["id"]


def test_a_matching_active_revision_is_reused_and_a_different_one_registered(account):
    target = batch_target(account)
    first, second, bigger = (account.queued_run(target) for _ in range(3))
    dispatcher(account).submit(spec_of(first, target))
    dispatcher(account).submit(spec_of(second, target))  # a new dispatcher: found through Batch, not a cache
    dispatcher(account).submit(spec_of(bigger, target, resources={"vcpus": 4, "memory_mb": 4096, "gpus": 0}))
    definitions = account.batch.describe_job_definitions(jobDefinitionName="nimbus-test-runner",
                                                         status="ACTIVE")["jobDefinitions"]
    assert sorted(d["revision"] for d in definitions) == [1, 2]
    used = [account.batch.describe_jobs(jobs=[account.services.runs.get("team", r["id"])["job"]["job_id"]])
            ["jobs"][0]["jobDefinition"] for r in (first, second, bigger)]
    assert used[0] == used[1] != used[2]


def test_a_submit_that_keeps_failing_fails_the_run_with_the_reason(account):
    target = batch_target(account)
    run = account.queued_run(target)

    def always(**kwargs):
        raise throttled("SubmitJob")

    account.batch.submit_job = always
    with pytest.raises(Unavailable):
        dispatcher(account).submit(spec_of(run, target))
    failed = account.services.runs.get("team", run["id"])
    assert failed["status"] == "Failed" and "AWS Batch is busy" in failed["error"]["message"]


def test_a_bad_request_fails_the_run_without_retrying(account):
    target = batch_target(account)
    target = {**target, "resources": {**target["resources"], "job_queue_arn": None}}
    run = account.queued_run(target)
    with pytest.raises(Invalid):
        dispatcher(account).submit(spec_of(run, target))
    assert "has no job queue" in account.services.runs.get("team", run["id"])["error"]["message"]


def test_a_run_canceled_while_submitting_has_its_job_stopped(account):
    target = batch_target(account)
    run = account.queued_run(target)
    real, stopped = account.batch.submit_job, []

    def submit_then_cancel(**kwargs):
        answer = real(**kwargs)
        account.services.runs.transition("team", run["id"], "Canceled")
        return answer

    account.batch.submit_job = submit_then_cancel
    account.batch.terminate_job = lambda **kwargs: stopped.append(kwargs) or {}
    dispatcher(account).submit(spec_of(run, target))
    assert "job" not in account.services.runs.get("team", run["id"])
    assert stopped and stopped[0]["reason"] == "the run ended before its job started"


def test_cancel_terminates_the_recorded_job(account):
    target = batch_target(account)
    run = account.queued_run(target)
    dispatcher(account).submit(spec_of(run, target))
    job_id = account.services.runs.get("team", run["id"])["job"]["job_id"]
    stopped = []
    account.batch.terminate_job = lambda **kwargs: stopped.append(kwargs) or {}
    assert dispatcher(account).cancel(run["id"]) is True
    assert stopped == [{"jobId": job_id, "reason": "canceled in Nimbus"}]
    assert dispatcher(account).cancel(account.queued_run(target)["id"]) is False  # never submitted


def test_a_batch_run_takes_its_environments_built_image_or_is_refused(account):
    import dataclasses

    from chalicelib.compute.image_build import IMAGE_FORMAT
    from chalicelib.errors import Conflict, Invalid
    from chalicelib.domain import table_keys
    from chalicelib.services.environments import Environments

    environment = {"name": "sklearn", "version": 2, "hash": "ab" * 32, "definition": {"pip": []}}
    ctx = account.services.ctx
    with pytest.raises(Invalid) as refused:  # a stage without an image build project
        Environments(ctx).built_image("team", environment, "run_config.environment")
    assert refused.value.field == "run_config.environment" and "NIMBUS_CODEBUILD_PROJECT" in refused.value.message

    building = Environments(dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings,
                                                                                 codebuild_project="images")))
    with pytest.raises(Conflict) as refused:  # not built yet
        building.built_image("team", environment, "run_config.environment")
    assert refused.value.field == "run_config.environment" and "sklearn:2" in refused.value.message

    key = table_keys.environment_build(environment["hash"], table_keys.IMAGE_BUILD_KIND + "team")
    ctx.table.put({"pk": key.pk, "sk": key.sk, "state": "Succeeded", "format": IMAGE_FORMAT,
                   "image_uri": "123.dkr.ecr.us-east-1.amazonaws.com/nimbus/team:abab-2"})
    assert building.built_image("team", environment, "run_config.environment").endswith("nimbus/team:abab-2")


# --- sealed run tokens ----------------------------------------------------------------------------


def run_token_key(alias: str = "alias/nimbus-test-run-tokens") -> str:
    import boto3

    kms = boto3.client("kms", region_name="us-east-1")
    kms.create_alias(AliasName=alias, TargetKeyId=kms.create_key(Description="run tokens")["KeyMetadata"]["KeyId"])
    return alias


def sealing(account, **kwargs) -> BatchDispatcher:
    settings = dataclasses.replace(account.settings, run_token_key=run_token_key())
    return BatchDispatcher(account.services.ctx, run_callbacks(account.services.ctx), settings, account.batch, **kwargs)


def job_env(account, run: dict) -> dict:
    job_id = account.services.runs.get("team", run["id"])["job"]["job_id"]
    (described,) = account.batch.describe_jobs(jobs=[job_id])["jobs"]
    return {e["name"]: e["value"] for e in described["container"]["environment"]}


def test_with_a_key_the_job_carries_its_token_sealed_for_its_run_only(account):
    import boto3

    target = batch_target(account)
    run, other = account.queued_run(target), account.queued_run(target)
    sent = []
    real = account.batch.submit_job
    account.batch.submit_job = lambda **kwargs: sent.append(kwargs) or real(**kwargs)

    sealing(account).submit(spec_of(run, target))

    env = job_env(account, run)
    assert "NIMBUS_RUN_TOKEN" not in env and env["NIMBUS_RUN_ID"] == run["id"]
    assert "nmb_" not in repr(sent)  # no clear token anywhere in what Batch was sent
    kms = boto3.client("kms", region_name="us-east-1")
    token = sealed_token.open_sealed(env[sealed_token.SEALED_ENV], run["id"], kms=kms)
    assert account.services.identity.authenticate(f"Bearer {token}").run_id == run["id"]
    with pytest.raises(sealed_token.SealedTokenError, match=f"does not open for run {other['id']}"):
        sealed_token.open_sealed(env[sealed_token.SEALED_ENV], other["id"], kms=kms)


@pytest.mark.parametrize("code, status, expected, reason", [
    ("ThrottlingException", 400, Unavailable, "sealing the run token: AWS KMS is busy"),
    ("KMSInternalException", 500, Unavailable, "sealing the run token: AWS KMS is busy"),
    # moto's KMS encrypts with a disabled key and checks no permission: those answers are made here
    ("DisabledException", 400, NimbusError, "the run token key (NIMBUS_RUN_TOKEN_KEY) is not usable: DisabledException"),
    ("AccessDeniedException", 400, NimbusError, "the API is not allowed to (no kms:Encrypt)"),
])
def test_a_token_that_cannot_be_sealed_fails_the_run_and_submits_nothing(account, code, status, expected, reason):
    import boto3
    from botocore.exceptions import ClientError

    target = batch_target(account)
    run = account.queued_run(target)
    kms = boto3.client("kms", region_name="us-east-1")

    def refuse(**kwargs):
        raise ClientError({"Error": {"Code": code, "Message": "no kms:Encrypt"},
                           "ResponseMetadata": {"HTTPStatusCode": status}}, "Encrypt")

    kms.encrypt = refuse
    submitted = []
    account.batch.submit_job = lambda **kwargs: submitted.append(kwargs) or {}

    with pytest.raises(expected) as raised:
        sealing(account, kms_client=kms).submit(spec_of(run, target))

    assert type(raised.value) is expected
    assert submitted == []  # no job, so no token in clear either
    failed = account.services.runs.get("team", run["id"])
    assert failed["status"] == "Failed" and reason in failed["error"]["message"], failed["error"]
    assert "job" not in failed
