"""Generate the CloudFormation template from the code.

    python infra/build.py          # rewrite infra/template.json
    python infra/build.py --check  # exit 1 if the committed template differs from what the code says

The table's keys and indexes come from chalicelib.store.schema, so the deployed table, the moto
fixtures and the SQLite adapter cannot disagree. The API function's permissions are declared once,
here, as the template's managed policy, which the template attaches to the role Chalice declares for
the functions (`chalice package --merge-template infra/template.json`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.store import schema  # noqa: E402

TEMPLATE_PATH = ROOT / "infra" / "template.json"
STAGES = ("dev", "prod")
APP_NAME = "nimbus"
# The logical id of the role `chalice package` gives every function when Chalice manages the role and
# autogenerates its policy (.chalice/config.json); the template declares it to replace its policy.
CHALICE_ROLE = "DefaultRole"

# DynamoDB actions of the API function. No Scan: every access path is a key or index query.
# TransactWriteItems is not an IAM action of its own: a transaction is authorized by the
# PutItem/UpdateItem/DeleteItem/ConditionCheckItem permissions of the items it touches.
DYNAMODB_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
]
S3_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
S3_BUCKET_ACTIONS = ["s3:ListBucket"]
LOGS_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
# The API deploys scoring functions (chalicelib/hosting/lambda_host.py): one function per endpoint named
# <table>-score-…, a published version per deployment, the alias `live`, concurrency settings.
LAMBDA_ACTIONS = [
    "lambda:CreateFunction",
    "lambda:GetFunction",
    "lambda:GetFunctionConfiguration",
    "lambda:UpdateFunctionCode",
    "lambda:UpdateFunctionConfiguration",
    "lambda:PublishVersion",
    "lambda:DeleteFunction",
    "lambda:TagResource",
    "lambda:GetAlias",
    "lambda:CreateAlias",
    "lambda:UpdateAlias",
    "lambda:DeleteAlias",
    "lambda:PutFunctionConcurrency",
    "lambda:DeleteFunctionConcurrency",
    "lambda:PutProvisionedConcurrencyConfig",
    "lambda:GetProvisionedConcurrencyConfig",
    "lambda:DeleteProvisionedConcurrencyConfig",
    "lambda:InvokeFunction",
]
PASS_ROLE_ACTIONS = ["iam:PassRole"]
SECRETS_ACTIONS = [
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DeleteSecret",
]
SCORING_LOGS_READ_ACTIONS = ["logs:DescribeLogStreams", "logs:FilterLogEvents"]
# AWS Batch (chalicelib/compute/batch*.py): a batch target's compute environment and job queue, named
# <table>-<workspace>-<target>; job definitions <table>-runner / <table>-env-<hash>; one job per run.
# Creating a resource with tags needs batch:TagResource on it.
BATCH_CLUSTER_ACTIONS = [
    "batch:CreateComputeEnvironment",
    "batch:UpdateComputeEnvironment",
    "batch:DeleteComputeEnvironment",
    "batch:CreateJobQueue",
    "batch:UpdateJobQueue",
    "batch:DeleteJobQueue",
    "batch:TagResource",
]
BATCH_JOB_ACTIONS = ["batch:SubmitJob", "batch:RegisterJobDefinition", "batch:TerminateJob", "batch:TagResource"]
# Batch's Describe* actions support no resource-level permissions: they are granted on "*" (read-only).
BATCH_READ_ACTIONS = [
    "batch:DescribeJobs",
    "batch:DescribeJobDefinitions",
    "batch:DescribeJobQueues",
    "batch:DescribeComputeEnvironments",
]
BATCH_JOB_LOG_GROUP = "/aws/batch/job"  # where Batch's default awslogs driver writes job output
# What a scoring function itself may do.
SCORING_MODEL_OBJECTS = "workspaces/*/models/*"  # registered model files (read at cold start)
SCORING_CAPTURE_OBJECTS = "workspaces/*/captures/*"  # captured requests (`*` also spans folders)
# Image functions download their source folder at cold start: the manifest the host writes per
# deployment revision (lambda_package.SOURCE_MANIFEST_PREFIX, tested) and the snapshot contents it lists.
SCORING_SOURCE_OBJECTS = ["lambda-sources/*", "workspaces/*/snapshots/content/*"]
TELEMETRY_KEYS = ["TELE#*"]  # the only partition keys a scoring function writes
# Environment images (chalicelib/compute/image_build.py): the API starts builds of the stage's CodeBuild
# project and reads their state back, and makes each workspace's ECR repository, `<table>/<ws>` (created
# with a tag, which needs ecr:TagResource). The build reads its context and writes its log under
# <workspace blob_prefix>environments/<hash>/, and pushes to the workspace's repository.
CODEBUILD_ACTIONS = ["codebuild:StartBuild", "codebuild:BatchGetBuilds"]
IMAGE_REPOSITORY_ACTIONS = ["ecr:CreateRepository", "ecr:DescribeRepositories", "ecr:TagResource"]
# Deployments that name an environment are Lambda container-image functions on its image
# (chalicelib/hosting/lambda_package.py). Whoever creates or updates such a function must be allowed to
# read the image; Lambda then adds the statement letting its service pull from the repository, when the
# repository's policy lacks it, which needs the repository policy actions.
SCORING_IMAGE_ACTIONS = [
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:GetRepositoryPolicy",
    "ecr:SetRepositoryPolicy",
]
IMAGE_CONTEXT_OBJECTS = "workspaces/*/environments/*/context.zip"
IMAGE_LOG_OBJECTS = "workspaces/*/environments/*/build.log"
ECR_PUSH_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
]
CODEBUILD_IMAGE = "aws/codebuild/standard:7.0"  # Ubuntu with docker and the AWS CLI
# Run tokens in Batch jobs' environments are sealed with a KMS key of the stage (nimbus/sealed_token.py):
# the API encrypts through the key's alias, the runner's role decrypts; both only with the run's
# encryption context key (RUN_TOKEN_CONTEXT_KEY must equal nimbus.sealed_token.CONTEXT_KEY: tested).
RUN_TOKEN_CONTEXT_KEY = "nimbus:run"
RUN_TOKEN_KEY_PENDING_DAYS = 7  # the shortest wait before a deleted key goes: its ciphertexts live for a run
IMAGE_BUILD_LOG_RETENTION_DAYS = 30


def table_name(stage: str) -> str:
    """The table of a stage (a literal stage, or "${Stage}" inside the template)."""
    return f"{APP_NAME}-{stage}"


def bucket_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-artifacts"


def scoring_role_name(stage: str) -> str:
    """Named, so the stage config can point at it (the host completes the ARN with the account id)."""
    return f"{APP_NAME}-{stage}-scoring"


def scoring_function_prefix(stage: str) -> str:
    """Must equal chalicelib.hosting.lambda_package.function_prefix(table_name(stage)) (tested): IAM then
    lets the API manage scoring functions and not itself."""
    return f"{table_name(stage)}-score-"


def batch_prefix(stage: str) -> str:
    """Every Batch resource the API makes is named with this prefix (the table's name, tested against
    chalicelib.compute.batch_spec): IAM then grants those and nothing else."""
    return f"{table_name(stage)}-"


def batch_role_name(stage: str, kind: str) -> str:
    """`job` (the runner container), `execution` (Fargate pulls and logs), `instance` (EC2 hosts)."""
    return f"{APP_NAME}-{stage}-batch-{kind}"


def image_repositories(stage: str) -> str:
    """The stage's environment image repositories: image_build.repository_name(table, workspace) (tested)."""
    return f"{table_name(stage)}/*"


def runner_repository_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-runner"


def image_project_name(stage: str) -> str:
    """The CodeBuild project that builds environment images; NIMBUS_CODEBUILD_PROJECT of the stage."""
    return f"{APP_NAME}-{stage}-images"


def image_build_log_group(stage: str) -> str:
    return f"/aws/codebuild/{image_project_name(stage)}"


def run_token_key_alias(stage: str) -> str:
    """The alias of the stage's run token key; NIMBUS_RUN_TOKEN_KEY of the stage (tested)."""
    return f"alias/{APP_NAME}-{stage}-run-tokens"


def secrets_prefix(stage: str) -> str:
    """Settings.secret_name_prefix's default for the stage's table (tested)."""
    return f"{APP_NAME}/{table_name(stage)}/"


def _sub(text: str) -> dict:
    return {"Fn::Sub": text}


def _policy_statements(table_arn, index_arn, bucket_arn, objects_arn, log_group_arns, scoring, batch,
                       images, run_tokens) -> list[dict]:
    """`scoring`: ARNs of the scoring functions, their role, their log groups and the stage's secrets.
    `batch`: ARN patterns of the stage's compute environments, job queues, job definitions, jobs and the
    roles the API passes to Batch. `images`: the image build project and the workspaces' repositories.
    `run_tokens`: the run token key (`key`: its ARN or an ARN pattern) and its alias (`alias`)."""
    return [*_scoring_and_data_statements(table_arn, index_arn, bucket_arn, objects_arn, log_group_arns, scoring),
            *_batch_statements(batch), *_image_statements(images), _seal_run_tokens_statement(run_tokens)]


def _run_token_context_condition() -> dict:
    """Only requests whose encryption context is the run's, and nothing else (a request without any
    context would pass ForAllValues alone: Null rules it out)."""
    return {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": [RUN_TOKEN_CONTEXT_KEY]},
            "Null": {"kms:EncryptionContextKeys": "false"}}


def _seal_run_tokens_statement(run_tokens: dict) -> dict:
    """The API encrypts run tokens with the stage's key, named through its alias (kms:RequestAlias: an
    IAM policy cannot name a key by its alias in Resource), and may not decrypt them."""
    return {
        "Sid": "SealRunTokens",
        "Effect": "Allow",
        "Action": ["kms:Encrypt"],
        "Resource": run_tokens["key"],
        "Condition": {"StringEquals": {"kms:RequestAlias": run_tokens["alias"]}, **_run_token_context_condition()},
    }


def _image_statements(images: dict) -> list[dict]:
    return [
        {
            "Sid": "ImageBuilds",
            "Effect": "Allow",
            "Action": CODEBUILD_ACTIONS,
            "Resource": images["project"],
        },
        {
            "Sid": "ImageRepositories",
            "Effect": "Allow",
            "Action": IMAGE_REPOSITORY_ACTIONS,
            "Resource": images["repositories"],
        },
        {
            "Sid": "ScoringImages",
            "Effect": "Allow",
            "Action": SCORING_IMAGE_ACTIONS,
            "Resource": images["repositories"],
        },
    ]


def _batch_statements(batch: dict) -> list[dict]:
    return [
        {
            "Sid": "BatchClusters",
            "Effect": "Allow",
            "Action": BATCH_CLUSTER_ACTIONS,
            "Resource": [batch["compute_environments"], batch["job_queues"]],
        },
        {
            "Sid": "BatchJobs",
            "Effect": "Allow",
            "Action": BATCH_JOB_ACTIONS,
            "Resource": [batch["job_queues"], batch["job_definitions"], batch["jobs"]],
        },
        {
            "Sid": "BatchRead",
            "Effect": "Allow",
            "Action": BATCH_READ_ACTIONS,
            "Resource": "*",
        },
        {
            "Sid": "PassBatchRoles",
            "Effect": "Allow",
            "Action": PASS_ROLE_ACTIONS,
            "Resource": batch["roles"],
        },
        {
            # Batch creates its service-linked role with the first compute environment of an account.
            "Sid": "BatchServiceLinkedRole",
            "Effect": "Allow",
            "Action": ["iam:CreateServiceLinkedRole"],
            "Resource": batch["service_linked_role"],
            "Condition": {"StringEquals": {"iam:AWSServiceName": "batch.amazonaws.com"}},
        },
    ]


def _scoring_and_data_statements(table_arn, index_arn, bucket_arn, objects_arn, log_group_arns, scoring) -> list[dict]:
    return [
        {
            "Sid": "Table",
            "Effect": "Allow",
            "Action": DYNAMODB_ACTIONS,
            "Resource": [table_arn, index_arn],
        },
        {
            "Sid": "ArtifactObjects",
            "Effect": "Allow",
            "Action": S3_OBJECT_ACTIONS,
            "Resource": objects_arn,
        },
        {
            "Sid": "ArtifactBucket",
            "Effect": "Allow",
            "Action": S3_BUCKET_ACTIONS,
            "Resource": bucket_arn,
        },
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": LOGS_ACTIONS,
            "Resource": log_group_arns,
        },
        {
            "Sid": "ScoringFunctions",
            "Effect": "Allow",
            "Action": LAMBDA_ACTIONS,
            "Resource": scoring["functions"],
        },
        {
            "Sid": "PassScoringRole",
            "Effect": "Allow",
            "Action": PASS_ROLE_ACTIONS,
            "Resource": scoring["role"],
            "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}},
        },
        {
            "Sid": "ScoringLogs",
            "Effect": "Allow",
            "Action": SCORING_LOGS_READ_ACTIONS,
            "Resource": scoring["log_groups"],
        },
        {
            "Sid": "Secrets",
            "Effect": "Allow",
            "Action": SECRETS_ACTIONS,
            "Resource": scoring["secrets"],
        },
    ]


def _table() -> dict:
    definition = schema.dynamodb_table_definition("unused")
    properties = {"TableName": _sub(table_name("${Stage}"))}
    properties.update({key: value for key, value in definition.items() if key != "TableName"})
    properties["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    properties["SSESpecification"] = {"SSEEnabled": True}
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
    }


def _bucket() -> dict:
    return {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketName": _sub(bucket_name("${Stage}")),
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            # The studio uploads and downloads artifacts straight from the browser with presigned URLs.
            "CorsConfiguration": {
                "CorsRules": [
                    {
                        "Id": "PresignedTransfers",
                        "AllowedMethods": ["PUT", "GET"],
                        "AllowedOrigins": ["*"],
                        "AllowedHeaders": ["*"],
                        "ExposedHeaders": ["ETag"],
                        "MaxAge": 3000,
                    }
                ]
            },
            "LifecycleConfiguration": {
                "Rules": [
                    {
                        "Id": "AbortIncompleteMultipartUploads",
                        "Status": "Enabled",
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                    }
                ]
            },
        },
    }


def _bucket_policy() -> dict:
    return {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": {"Ref": "ArtifactBucket"},
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [
                            {"Fn::GetAtt": ["ArtifactBucket", "Arn"]},
                            _sub("${ArtifactBucket.Arn}/*"),
                        ],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            },
        },
    }


def _scoring_role() -> dict:
    """The execution role of every scoring function of the stage: read models (and the source folders of
    image functions), record telemetry and captured requests, write its own logs."""
    log_groups = (
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
        f":log-group:/aws/lambda/{scoring_function_prefix('${Stage}')}*"
    )
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": _sub(scoring_role_name("${Stage}")),
            "Description": _sub("Execution role of the Nimbus scoring functions (${Stage})"),
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [
                {
                    "PolicyName": "scoring",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "ReadModels",
                                "Effect": "Allow",
                                "Action": ["s3:GetObject"],
                                "Resource": _sub(f"${{ArtifactBucket.Arn}}/{SCORING_MODEL_OBJECTS}"),
                            },
                            {
                                "Sid": "ReadSources",
                                "Effect": "Allow",
                                "Action": ["s3:GetObject"],
                                "Resource": [_sub(f"${{ArtifactBucket.Arn}}/{objects}")
                                             for objects in SCORING_SOURCE_OBJECTS],
                            },
                            {
                                "Sid": "WriteCaptures",
                                "Effect": "Allow",
                                "Action": ["s3:PutObject"],
                                "Resource": _sub(f"${{ArtifactBucket.Arn}}/{SCORING_CAPTURE_OBJECTS}"),
                            },
                            {
                                "Sid": "WriteTelemetry",
                                "Effect": "Allow",
                                "Action": ["dynamodb:UpdateItem"],
                                "Resource": {"Fn::GetAtt": ["NimbusTable", "Arn"]},
                                "Condition": {
                                    "ForAllValues:StringLike": {"dynamodb:LeadingKeys": TELEMETRY_KEYS}
                                },
                            },
                            {
                                "Sid": "Logs",
                                "Effect": "Allow",
                                "Action": LOGS_ACTIONS,
                                "Resource": [_sub(log_groups), _sub(f"{log_groups}:log-stream:*")],
                            },
                        ],
                    },
                }
            ],
        },
    }


def _api_function_policy() -> dict:
    # The function's log groups: /aws/lambda/nimbus-<stage> (chalice deploy) or
    # /aws/lambda/nimbus-<stage>-APIHandler-... (CloudFormation, stack named nimbus-<stage>).
    log_groups = (
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
        f":log-group:/aws/lambda/{APP_NAME}-${{Stage}}*"
    )
    return {
        "Type": "AWS::IAM::ManagedPolicy",
        "Properties": {
            "Description": _sub("Least privilege of the Nimbus API function (${Stage})"),
            "Roles": [{"Ref": CHALICE_ROLE}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": _policy_statements(
                    table_arn={"Fn::GetAtt": ["NimbusTable", "Arn"]},
                    index_arn=_sub("${NimbusTable.Arn}/index/*"),
                    bucket_arn={"Fn::GetAtt": ["ArtifactBucket", "Arn"]},
                    objects_arn=_sub("${ArtifactBucket.Arn}/*"),
                    log_group_arns=[_sub(log_groups), _sub(f"{log_groups}:log-stream:*")],
                    scoring=_template_scoring_arns(),
                    batch=_template_batch_arns(),
                    images=_template_image_arns(),
                    run_tokens={"key": {"Fn::GetAtt": ["RunTokenKey", "Arn"]},
                                "alias": _sub(run_token_key_alias("${Stage}"))},
                ),
            },
        },
    }


def _chalice_role() -> dict:
    """The role `chalice package` declares for every function of the app (autogen_policy on). Declared here
    in full, it replaces Chalice's in the merged template: no inline policy (Chalice's would grant logs on
    every log group), ApiFunctionPolicy is attached to it (the policy's `Roles`)."""
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": _sub("Role of the Nimbus API functions (${Stage})"),
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            },
            "Policies": [],
        },
    }


def _template_scoring_arns() -> dict:
    def arn(service: str) -> str:
        return f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}"

    prefix = scoring_function_prefix("${Stage}")
    log_groups = f"{arn('logs')}:log-group:/aws/lambda/{prefix}*"
    return {
        "functions": _sub(f"{arn('lambda')}:function:{prefix}*"),
        "role": {"Fn::GetAtt": ["ScoringFunctionRole", "Arn"]},
        "log_groups": [_sub(log_groups), _sub(f"{log_groups}:*")],
        "secrets": _sub(f"{arn('secretsmanager')}:secret:{secrets_prefix('${Stage}')}*"),
    }


def _template_batch_arns() -> dict:
    batch = "arn:${AWS::Partition}:batch:${AWS::Region}:${AWS::AccountId}"
    prefix = batch_prefix("${Stage}")
    return {
        "compute_environments": _sub(f"{batch}:compute-environment/{prefix}*"),
        "job_queues": _sub(f"{batch}:job-queue/{prefix}*"),
        "job_definitions": _sub(f"{batch}:job-definition/{prefix}*"),
        "jobs": _sub(f"{batch}:job/*"),
        "roles": [{"Fn::GetAtt": [name, "Arn"]} for name in ("BatchJobRole", "BatchExecutionRole", "BatchInstanceRole")],
        "service_linked_role": _sub(
            "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/aws-service-role/batch.amazonaws.com/*"),
    }


def _template_image_arns() -> dict:
    return {
        "project": _sub("arn:${AWS::Partition}:codebuild:${AWS::Region}:${AWS::AccountId}"
                        f":project/{image_project_name('${Stage}')}"),
        "repositories": _sub("arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}"
                             f":repository/{image_repositories('${Stage}')}"),
    }


def _service_role(name: str, description: str, service: str, **properties) -> dict:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": _sub(name),
            "Description": _sub(description),
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
            },
            **properties,
        },
    }


def _run_token_key_resources() -> dict:
    """The stage's KMS key for run tokens and its alias. The key policy gives the account (root) the key, as
    AWS's default key policy does: IAM policies then say who uses it, and only two do (the API's
    SealRunTokens, the runner's OpenRunTokens)."""
    return {
        "RunTokenKey": {
            "Type": "AWS::KMS::Key",
            "Properties": {
                "Description": _sub("Seals the run tokens of Nimbus Batch jobs (${Stage})"),
                "Enabled": True,
                "KeySpec": "SYMMETRIC_DEFAULT",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "EnableKeyRotation": True,
                "PendingWindowInDays": RUN_TOKEN_KEY_PENDING_DAYS,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Sid": "AccountAdministers",
                        "Effect": "Allow",
                        "Principal": {"AWS": _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                        "Action": "kms:*",
                        "Resource": "*",
                    }],
                },
            },
        },
        "RunTokenKeyAlias": {
            "Type": "AWS::KMS::Alias",
            "Properties": {"AliasName": _sub(run_token_key_alias("${Stage}")), "TargetKeyId": {"Ref": "RunTokenKey"}},
        },
    }


def _batch_resources() -> dict:
    """The roles Batch jobs and hosts run with, and the repository of the runner's image. The runner
    talks to the API only (presigned URLs for bytes), so its role may write its logs and open its run's
    sealed token, nothing else."""
    job_logs = f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{BATCH_JOB_LOG_GROUP}"
    return {
        "BatchJobRole": _service_role(
            batch_role_name("${Stage}", "job"), "Role of the Nimbus runner containers on AWS Batch (${Stage})",
            "ecs-tasks.amazonaws.com",
            Policies=[{
                "PolicyName": "runner",
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "Logs",
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Resource": [_sub(job_logs), _sub(f"{job_logs}:log-stream:*")],
                        },
                        {
                            # NIMBUS_RUN_TOKEN_SEALED: decrypt only, with the run's encryption context.
                            "Sid": "OpenRunTokens",
                            "Effect": "Allow",
                            "Action": ["kms:Decrypt"],
                            "Resource": {"Fn::GetAtt": ["RunTokenKey", "Arn"]},
                            "Condition": _run_token_context_condition(),
                        },
                    ],
                },
            }],
        ),
        "BatchExecutionRole": _service_role(
            batch_role_name("${Stage}", "execution"),
            "Pulls the runner image and writes job logs for Fargate jobs of Nimbus (${Stage})",
            "ecs-tasks.amazonaws.com",
            ManagedPolicyArns=[_sub(
                "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")],
        ),
        "BatchInstanceRole": _service_role(
            batch_role_name("${Stage}", "instance"), "EC2 hosts of the Nimbus Batch compute environments (${Stage})",
            "ec2.amazonaws.com",
            ManagedPolicyArns=[_sub(
                "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role")],
        ),
        "BatchInstanceProfile": {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {
                "InstanceProfileName": _sub(batch_role_name("${Stage}", "instance")),
                "Roles": [{"Ref": "BatchInstanceRole"}],
            },
        },
        "RunnerRepository": {
            "Type": "AWS::ECR::Repository",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "RepositoryName": _sub(runner_repository_name("${Stage}")),
                "ImageScanningConfiguration": {"ScanOnPush": True},
            },
        },
    }


def _image_build_resources() -> dict:
    """The CodeBuild project that builds environment images, its role and its log group. The API starts
    every build with the source (the context zip in the bucket, `sourceTypeOverride` S3), the buildspec
    and privileged mode as overrides, so the project itself has no source: its own buildspec only fails."""
    def arn(service: str) -> str:
        return f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}"

    log_group = f"{arn('logs')}:log-group:{image_build_log_group('${Stage}')}"
    repositories = f"{arn('ecr')}:repository/{image_repositories('${Stage}')}"
    return {
        "ImageBuildLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": _sub(image_build_log_group("${Stage}")),
                "RetentionInDays": IMAGE_BUILD_LOG_RETENTION_DAYS,
            },
        },
        "ImageBuildRole": _service_role(
            f"{image_project_name('${Stage}')}-build", "Builds and pushes the Nimbus environment images (${Stage})",
            "codebuild.amazonaws.com",
            Policies=[{
                "PolicyName": "image-build",
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "ReadContexts",
                            "Effect": "Allow",
                            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                            "Resource": _sub(f"${{ArtifactBucket.Arn}}/{IMAGE_CONTEXT_OBJECTS}"),
                        },
                        {
                            # CodeBuild checks an S3 source's bucket (region, owner) before it downloads.
                            "Sid": "SourceBucket",
                            "Effect": "Allow",
                            "Action": ["s3:GetBucketLocation", "s3:GetBucketAcl"],
                            "Resource": {"Fn::GetAtt": ["ArtifactBucket", "Arn"]},
                        },
                        {
                            "Sid": "WriteBuildLogs",
                            "Effect": "Allow",
                            "Action": ["s3:PutObject"],
                            "Resource": _sub(f"${{ArtifactBucket.Arn}}/{IMAGE_LOG_OBJECTS}"),
                        },
                        {
                            # No resource-level permissions: the token is for the registry, not a repository.
                            "Sid": "RegistryLogin",
                            "Effect": "Allow",
                            "Action": ["ecr:GetAuthorizationToken"],
                            "Resource": "*",
                        },
                        {
                            "Sid": "PushImages",
                            "Effect": "Allow",
                            "Action": ECR_PUSH_ACTIONS,
                            "Resource": _sub(repositories),
                        },
                        {
                            "Sid": "Logs",
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Resource": [_sub(log_group), _sub(f"{log_group}:log-stream:*")],
                        },
                    ],
                },
            }],
        ),
        "ImageBuildProject": {
            "Type": "AWS::CodeBuild::Project",
            "Properties": {
                "Name": _sub(image_project_name("${Stage}")),
                "Description": _sub("Nimbus environment images (${Stage}): started by the API with overrides"),
                "ServiceRole": {"Fn::GetAtt": ["ImageBuildRole", "Arn"]},
                "Source": {
                    "Type": "NO_SOURCE",
                    "BuildSpec": json.dumps({"version": 0.2, "phases": {"build": {"commands": [
                        "echo 'Nimbus starts these builds with a source and a buildspec' && exit 1"]}}}),
                },
                "Artifacts": {"Type": "NO_ARTIFACTS"},
                "Environment": {
                    "Type": "LINUX_CONTAINER",
                    "ComputeType": "BUILD_GENERAL1_SMALL",
                    "Image": CODEBUILD_IMAGE,
                    "ImagePullCredentialsType": "CODEBUILD",
                    "PrivilegedMode": True,  # docker build inside the build container
                },
                "LogsConfig": {
                    "CloudWatchLogs": {"Status": "ENABLED", "GroupName": {"Ref": "ImageBuildLogGroup"}},
                    "S3Logs": {"Status": "DISABLED"},
                },
                "TimeoutInMinutes": 60,
                "QueuedTimeoutInMinutes": 60,
            },
        },
    }


def template() -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Nimbus data plane: the DynamoDB table, the artifact bucket, the API function's policy, the scoring functions' role, the roles of Batch jobs, the run token key and the environment image builds.",
        "Parameters": {
            "Stage": {
                "Type": "String",
                "AllowedValues": list(STAGES),
                "Description": "Chalice stage this stack belongs to (must match `chalice package --stage`).",
            }
        },
        "Resources": {
            "NimbusTable": _table(),
            "ArtifactBucket": _bucket(),
            "ArtifactBucketPolicy": _bucket_policy(),
            "ApiFunctionPolicy": _api_function_policy(),
            CHALICE_ROLE: _chalice_role(),
            "ScoringFunctionRole": _scoring_role(),
            **_batch_resources(),
            **_run_token_key_resources(),
            **_image_build_resources(),
        },
        "Outputs": {
            "TableName": {"Value": {"Ref": "NimbusTable"}},
            "TableArn": {"Value": {"Fn::GetAtt": ["NimbusTable", "Arn"]}},
            "BucketName": {"Value": {"Ref": "ArtifactBucket"}},
            "ApiFunctionPolicyArn": {"Value": {"Ref": "ApiFunctionPolicy"}},
            "ScoringRoleArn": {"Value": {"Fn::GetAtt": ["ScoringFunctionRole", "Arn"]}},
            "BatchJobRoleArn": {"Value": {"Fn::GetAtt": ["BatchJobRole", "Arn"]}},
            "BatchExecutionRoleArn": {"Value": {"Fn::GetAtt": ["BatchExecutionRole", "Arn"]}},
            "BatchInstanceProfileArn": {"Value": {"Fn::GetAtt": ["BatchInstanceProfile", "Arn"]}},
            "RunnerRepositoryName": {"Value": {"Ref": "RunnerRepository"}},
            "ImageBuildRoleArn": {"Value": {"Fn::GetAtt": ["ImageBuildRole", "Arn"]}},
            "ImageBuildProjectName": {"Value": {"Ref": "ImageBuildProject"}},
            "RunTokenKeyArn": {"Value": {"Fn::GetAtt": ["RunTokenKey", "Arn"]}},
            "RunTokenKeyAlias": {"Value": {"Ref": "RunTokenKeyAlias"}},
        },
    }


def _dump(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def render() -> str:
    """The exact text of infra/template.json."""
    return _dump(template())


def outputs() -> dict[Path, str]:
    """Every generated file and its expected text."""
    return {TEMPLATE_PATH: render()}


def stale() -> list[Path]:
    """Generated files whose committed text differs from what the code produces."""
    return [
        path
        for path, text in outputs().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed files are out of date")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"{_shown(path)} is out of date: run `python infra/build.py`", file=sys.stderr)
        return 1 if out_of_date else 0
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
