"""The names a stage gives its resources.

Each function takes a literal stage (`dev`, `prod`: what the stage config and the app compute) or
STAGE, the template's `${Stage}` inside an `Fn::Sub`. The tests compare the literal names with
`.chalice/config.json` and the app's own naming, so the template, the config and the code agree.
"""
from __future__ import annotations

APP_NAME = "nimbus"
STAGES = ("dev", "prod")
STAGE = "${Stage}"  # the Stage parameter, inside Fn::Sub


def table_name(stage: str) -> str:
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
    chalicelib.compute.batch.spec): IAM then grants those and nothing else."""
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


def api_log_groups(stage: str) -> str:
    """The API functions' log groups: /aws/lambda/nimbus-<stage> (chalice deploy) or
    /aws/lambda/nimbus-<stage>-APIHandler-… (CloudFormation, stack named nimbus-<stage>)."""
    return f"/aws/lambda/{APP_NAME}-{stage}*"
