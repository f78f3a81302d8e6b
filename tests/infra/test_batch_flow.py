"""The stack's Batch pieces in moto: roles and the run token key deploy, a run is submitted with them (its
token sealed with the key), and a job state change event through the Chalice app's own handler moves the run."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from chalice.test import Client

from chalicelib.services.run_callbacks import run_callbacks
from chalicelib.api import service_locator
from chalicelib.services.container import Services
from chalicelib.compute.batch.dispatcher import BATCH_JOBS_PK, BatchDispatcher
from chalicelib.compute.batch.provisioner import BatchProvisioner
from chalicelib.domain.context import Context
from chalicelib.settings import Settings
from chalicelib.store.factory import build_blobs, build_table
from chalicelib.store.table import Query
from nimbus.runtime.job_spec import JobSpec
from nimbus.runtime import sealed_token

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


@pytest.fixture
def stack(aws_env):
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(StackName="nimbus-dev", TemplateBody=(ROOT / "infra" / "template.json").read_text(),
                                Parameters=[{"ParameterKey": "Stage", "ParameterValue": "dev"}],
                                Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"])
    (described,) = cloudformation.describe_stacks(StackName="nimbus-dev")["Stacks"]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    return {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}


@pytest.mark.filterwarnings("ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy:UserWarning")
def test_the_stack_roles_exist_under_the_names_the_stage_config_gives(stack):
    iam = boto3.client("iam", region_name=REGION)
    env = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]["environment_variables"]
    job = iam.get_role(RoleName=env["NIMBUS_BATCH_JOB_ROLE_ARN"])["Role"]
    assert job["Arn"] == stack["BatchJobRoleArn"]
    assert job["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert iam.get_role(RoleName=env["NIMBUS_BATCH_EXECUTION_ROLE_ARN"])["Role"]["Arn"] == stack["BatchExecutionRoleArn"]
    profile = iam.get_instance_profile(InstanceProfileName=env["NIMBUS_BATCH_INSTANCE_ROLE_ARN"])["InstanceProfile"]
    assert profile["Arn"] == stack["BatchInstanceProfileArn"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["nimbus-dev-batch-instance"]
    repository = boto3.client("ecr", region_name=REGION).describe_repositories(
        repositoryNames=[stack["RunnerRepositoryName"]])["repositories"][0]
    assert repository["repositoryName"] == "nimbus-dev-runner"


@pytest.mark.filterwarnings("ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy:UserWarning")
def test_a_submitted_run_fails_when_its_job_state_change_says_so(stack):
    # Given the stage's settings as the function sees them, with the stack's table and roles
    env = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]["environment_variables"]
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument="{}")  # moto wants a service role
    settings = Settings.from_env({**env, "AWS_REGION": REGION, "NIMBUS_API_URL": "https://api.example/api",
                                  "NIMBUS_RUNNER_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/nimbus-dev-runner:1",
                                  "NIMBUS_BATCH_SERVICE_ROLE_ARN": "batch-service"})
    services = Services.over(Context(build_table(settings), build_blobs(settings), settings))
    admin = services.identity.authenticate(f"Bearer {services.identity.bootstrap_admin()}")
    services.workspaces.create(admin, "team")
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    network = {"provisioning": "EC2", "max_vcpus": 4,
               "subnets": [ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]],
               "security_group_ids": [ec2.create_security_group(GroupName="b", Description="b", VpcId=vpc)["GroupId"]]}
    resources = BatchProvisioner(settings, poll_seconds=0).create("team", "gpu", network)
    target = {"name": "gpu", "type": "batch", "settings": network, "resources": resources, "state": "Succeeded"}

    # When a run is submitted to Batch
    run = services.runs.create(admin, "team", "mnist", status="Queued", submission={
        "snapshot_id": "s", "run_config": {"script": "train.py", "compute": "gpu"}, "compute_target": "gpu"})
    BatchDispatcher(services.ctx, run_callbacks(services.ctx), settings).submit(JobSpec(run["id"], "team", 600, "gpu", target))
    job_id = services.runs.get("team", run["id"])["job"]["job_id"]
    (job,) = boto3.client("batch", region_name=REGION).describe_jobs(jobs=[job_id])["jobs"]
    assert job["jobDefinition"].split(":job-definition/")[1].startswith("nimbus-dev-runner:")
    # its token sealed with the stack's key, through the alias the stage names, and for this run only
    job_env = {e["name"]: e["value"] for e in job["container"]["environment"]}
    assert "NIMBUS_RUN_TOKEN" not in job_env and settings.run_token_key == "alias/nimbus-dev-run-tokens"
    token = sealed_token.open_sealed(job_env[sealed_token.SEALED_ENV], run["id"],
                                     kms=boto3.client("kms", region_name=REGION))
    assert services.identity.authenticate(f"Bearer {token}").run_id == run["id"]

    # and Batch reports it FAILED (moto runs nothing and emits no events: the event carries moto's job)
    detail = {**job, "status": "FAILED", "statusReason": "Task failed to start", "container": {"exitCode": 1}}
    service_locator.use(services)
    try:
        from chalicelib.api.app import app

        with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
            event = client.events.generate_cw_event("aws.batch", "Batch Job State Change", detail,
                                                    [job["jobArn"]], region=REGION)
            first = client.lambda_.invoke("batch_job_state_change", event)
            again = client.lambda_.invoke("batch_job_state_change", event)
            swept = client.lambda_.invoke("batch_sweep", client.events.generate_cw_event(
                "aws.events", "Scheduled Event", {}, [], region=REGION))
    finally:
        service_locator.use(None)

    # Then the run failed with Batch's reason, once
    assert first.payload == {"outcome": "failed"} and again.payload == {"outcome": "unchanged: the run is Failed"}
    failed = services.runs.get("team", run["id"])
    assert failed["status"] == "Failed"
    assert failed["error"]["message"] == "the Batch job failed: Task failed to start (exit code 1)"
    assert swept.payload == {"checked": 0, "failed": 0}  # ended runs leave the sweep's list
    assert services.ctx.table.query(Query(BATCH_JOBS_PK)).items == []
