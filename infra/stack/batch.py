"""AWS Batch (chalicelib/compute/batch*.py): the roles jobs and hosts run with, the runner's image
repository, and what the API may do in Batch.

A batch target's compute environment and job queue are named <table>-<workspace>-<target>, job
definitions <table>-runner / <table>-env-<hash>; one job per run. The API's Batch permissions stop at the
<table>- prefix. The runner talks to the API only (presigned URLs for bytes), so its role may write its
logs and open its run's sealed token, nothing else.
"""
from __future__ import annotations

import awacs.batch
import awacs.iam
from awacs.aws import Statement, StringEquals
from troposphere import Ref, Retain, Sub, ecr, iam, kms

from . import run_tokens
from .names import STAGE, batch_prefix, batch_role_name, runner_repository_name
from .policy import ANY_RESOURCE, CONTAINER_LOGS, account_arn, allow, arn, arn_of, aws_managed_policy, inline, \
    log_groups, service_role

JOB_LOG_GROUP = "/aws/batch/job"  # where Batch's default awslogs driver writes job output
ECS_TASKS = "ecs-tasks.amazonaws.com"
# Creating a resource with tags needs batch:TagResource on it.
CLUSTER_ACTIONS = [
    awacs.batch.CreateComputeEnvironment, awacs.batch.UpdateComputeEnvironment, awacs.batch.DeleteComputeEnvironment,
    awacs.batch.CreateJobQueue, awacs.batch.UpdateJobQueue, awacs.batch.DeleteJobQueue, awacs.batch.TagResource,
]
JOB_ACTIONS = [awacs.batch.SubmitJob, awacs.batch.RegisterJobDefinition, awacs.batch.TerminateJob,
               awacs.batch.TagResource]
# Batch's Describe* actions support no resource-level permissions: they are granted on "*" (read-only).
READ_ACTIONS = [awacs.batch.DescribeJobs, awacs.batch.DescribeJobDefinitions, awacs.batch.DescribeJobQueues,
                awacs.batch.DescribeComputeEnvironments]


def job_role(run_token_key: kms.Key) -> iam.Role:
    return service_role(
        "BatchJobRole", batch_role_name(STAGE, "job"), "Role of the Nimbus runner containers on AWS Batch (${Stage})",
        ECS_TASKS,
        Policies=[inline("runner", allow("Logs", CONTAINER_LOGS, log_groups(JOB_LOG_GROUP)),
                         run_tokens.open_statement(run_token_key))],
    )


def execution_role() -> iam.Role:
    """Fargate pulls the image and writes the job's logs with it."""
    return service_role(
        "BatchExecutionRole", batch_role_name(STAGE, "execution"),
        "Pulls the runner image and writes job logs for Fargate jobs of Nimbus (${Stage})", ECS_TASKS,
        ManagedPolicyArns=[aws_managed_policy("AmazonECSTaskExecutionRolePolicy")],
    )


def instance_role() -> iam.Role:
    """The hosts of EC2 compute environments."""
    return service_role(
        "BatchInstanceRole", batch_role_name(STAGE, "instance"),
        "EC2 hosts of the Nimbus Batch compute environments (${Stage})", "ec2.amazonaws.com",
        ManagedPolicyArns=[aws_managed_policy("AmazonEC2ContainerServiceforEC2Role")],
    )


def instance_profile(role: iam.Role) -> iam.InstanceProfile:
    return iam.InstanceProfile("BatchInstanceProfile", InstanceProfileName=Sub(batch_role_name(STAGE, "instance")),
                               Roles=[Ref(role)])


def runner_repository() -> ecr.Repository:
    """infra/runner.Dockerfile's image; retained, like the images in it."""
    repository = ecr.Repository("RunnerRepository", RepositoryName=Sub(runner_repository_name(STAGE)),
                                ImageScanningConfiguration=ecr.ImageScanningConfiguration(ScanOnPush=True))
    repository.DeletionPolicy = repository.UpdateReplacePolicy = Retain
    return repository


def api_statements(roles: list[iam.Role]) -> list[Statement]:
    """Make and remove the targets' clusters, run jobs on them, read them back, pass the job and host roles."""
    prefix = batch_prefix(STAGE)
    queues = arn("batch", f"job-queue/{prefix}*")
    return [
        allow("BatchClusters", CLUSTER_ACTIONS, [arn("batch", f"compute-environment/{prefix}*"), queues]),
        # Jobs' ARNs hold ids only, not names: any job of the account and region.
        allow("BatchJobs", JOB_ACTIONS, [queues, arn("batch", f"job-definition/{prefix}*"), arn("batch", "job/*")]),
        allow("BatchRead", READ_ACTIONS, ANY_RESOURCE),
        allow("PassBatchRoles", [awacs.iam.PassRole], [arn_of(role) for role in roles]),
        # Batch creates its service-linked role with an account's first compute environment (declared here, it
        # would fail in accounts that have it already).
        allow("BatchServiceLinkedRole", [awacs.iam.CreateServiceLinkedRole],
              account_arn("iam", "role/aws-service-role/batch.amazonaws.com/*"),
              StringEquals("iam:AWSServiceName", "batch.amazonaws.com")),
    ]
