"""Environment images (chalicelib/compute/image_build.py): the CodeBuild project that builds them, its role
and log group, and what the API may do with builds and image repositories.

The API starts every build with the source (the context zip in the bucket, `sourceTypeOverride` S3), the
buildspec and privileged mode as overrides, so the project has no source of its own: its own buildspec
only fails. Each workspace's images go to the ECR repository `<table>/<ws>`, which the API creates (with a
tag, hence ecr:TagResource); the build reads its context and writes its log under
<workspace blob_prefix>environments/<hash>/.
"""
from __future__ import annotations

import json

import awacs.codebuild
import awacs.ecr
import awacs.s3
from awacs.aws import Statement
from troposphere import Ref, Sub, codebuild, iam, logs, s3

from .names import STAGE, image_build_log_group, image_project_name, image_repositories
from .policy import ANY_RESOURCE, CONTAINER_LOGS, allow, arn, arn_of, inline, log_groups, objects, service_role

CODEBUILD_IMAGE = "aws/codebuild/standard:7.0"  # Ubuntu with docker and the AWS CLI
LOG_RETENTION_DAYS = 30
BUILD_TIMEOUT_MINUTES = 60
CONTEXT_OBJECTS = "workspaces/*/environments/*/context.zip"
LOG_OBJECTS = "workspaces/*/environments/*/build.log"
PUSH_ACTIONS = [awacs.ecr.BatchCheckLayerAvailability, awacs.ecr.InitiateLayerUpload, awacs.ecr.UploadLayerPart,
                awacs.ecr.CompleteLayerUpload, awacs.ecr.PutImage]
# Deployments that name an environment are Lambda container-image functions on its image
# (chalicelib/hosting/lambda_package.py). Whoever creates or updates such a function must be allowed to read
# the image; Lambda then adds the statement letting its service pull from the repository, when the
# repository's policy lacks it, which needs the repository policy actions.
SCORING_IMAGE_ACTIONS = [awacs.ecr.BatchGetImage, awacs.ecr.GetDownloadUrlForLayer, awacs.ecr.GetRepositoryPolicy,
                         awacs.ecr.SetRepositoryPolicy]
# A build that is started always fails: the API brings the real buildspec.
PLACEHOLDER_BUILDSPEC = json.dumps({"version": 0.2, "phases": {"build": {"commands": [
    "echo 'Nimbus starts these builds with a source and a buildspec' && exit 1"]}}})


def _repositories() -> Sub:
    return arn("ecr", f"repository/{image_repositories(STAGE)}")


def log_group() -> logs.LogGroup:
    return logs.LogGroup("ImageBuildLogGroup", LogGroupName=Sub(image_build_log_group(STAGE)),
                         RetentionInDays=LOG_RETENTION_DAYS)


def build_role(artifacts: s3.Bucket) -> iam.Role:
    """Read the build contexts, write the build logs, push to the stage's repositories."""
    return service_role(
        "ImageBuildRole", f"{image_project_name(STAGE)}-build",
        "Builds and pushes the Nimbus environment images (${Stage})", "codebuild.amazonaws.com",
        Policies=[inline(
            "image-build",
            allow("ReadContexts", [awacs.s3.GetObject, awacs.s3.GetObjectVersion], objects(artifacts, CONTEXT_OBJECTS)),
            # CodeBuild checks an S3 source's bucket (region, owner) before it downloads.
            allow("SourceBucket", [awacs.s3.GetBucketLocation, awacs.s3.GetBucketAcl], arn_of(artifacts)),
            allow("WriteBuildLogs", [awacs.s3.PutObject], objects(artifacts, LOG_OBJECTS)),
            # No resource-level permissions: the token is for the registry, not a repository.
            allow("RegistryLogin", [awacs.ecr.GetAuthorizationToken], ANY_RESOURCE),
            allow("PushImages", PUSH_ACTIONS, _repositories()),
            allow("Logs", CONTAINER_LOGS, log_groups(image_build_log_group(STAGE))),
        )],
    )


def project(role: iam.Role, group: logs.LogGroup) -> codebuild.Project:
    return codebuild.Project(
        "ImageBuildProject",
        Name=Sub(image_project_name(STAGE)),
        Description=Sub("Nimbus environment images (${Stage}): started by the API with overrides"),
        ServiceRole=arn_of(role),
        Source=codebuild.Source(Type="NO_SOURCE", BuildSpec=PLACEHOLDER_BUILDSPEC),
        Artifacts=codebuild.Artifacts(Type="NO_ARTIFACTS"),
        Environment=codebuild.Environment(
            Type="LINUX_CONTAINER", ComputeType="BUILD_GENERAL1_SMALL", Image=CODEBUILD_IMAGE,
            ImagePullCredentialsType="CODEBUILD",
            PrivilegedMode=True),  # docker build inside the build container
        LogsConfig=codebuild.LogsConfig(
            CloudWatchLogs=codebuild.CloudWatchLogs(Status="ENABLED", GroupName=Ref(group)),
            S3Logs=codebuild.S3Logs(Status="DISABLED")),
        TimeoutInMinutes=BUILD_TIMEOUT_MINUTES,
        QueuedTimeoutInMinutes=BUILD_TIMEOUT_MINUTES,
    )


def api_statements() -> list[Statement]:
    """Start builds of the project and read them back; make the workspaces' repositories; let Lambda pull
    from them for image functions."""
    return [
        allow("ImageBuilds", [awacs.codebuild.StartBuild, awacs.codebuild.BatchGetBuilds],
              arn("codebuild", f"project/{image_project_name(STAGE)}")),
        allow("ImageRepositories", [awacs.ecr.CreateRepository, awacs.ecr.DescribeRepositories, awacs.ecr.TagResource],
              _repositories()),
        allow("ScoringImages", SCORING_IMAGE_ACTIONS, _repositories()),
    ]
