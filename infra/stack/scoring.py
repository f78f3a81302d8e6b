"""The scoring functions the API deploys (chalicelib/hosting/lambda_host.py): their execution role, and
what the API may do to them.

One function per endpoint named <table>-score-…, a published version per deployment, the alias `live`,
concurrency settings. The API's Lambda permissions stop at that prefix, so it cannot change itself.
"""
from __future__ import annotations

import awacs.awslambda as lambda_
import awacs.dynamodb
import awacs.iam
import awacs.logs
import awacs.s3
import awacs.secretsmanager as secrets
from awacs.aws import ForAllValuesStringLike, StringEquals, Statement
from troposphere import dynamodb, iam, s3

from .names import STAGE, scoring_function_prefix, scoring_role_name, secrets_prefix
from .policy import FUNCTION_LOGS, LAMBDA_SERVICE, allow, arn, arn_of, inline, log_groups, objects, service_role

TITLE = "ScoringFunctionRole"
MODEL_OBJECTS = "workspaces/*/models/*"  # registered model files (read at cold start)
CAPTURE_OBJECTS = "workspaces/*/captures/*"  # captured requests (`*` also spans folders)
# Image functions download their source folder at cold start: the manifest the host writes per
# deployment revision (lambda_package.SOURCE_MANIFEST_PREFIX, tested) and the snapshot contents it lists.
SOURCE_OBJECTS = ["lambda-sources/*", "workspaces/*/snapshots/content/*"]
TELEMETRY_KEYS = ["TELE#*"]  # the only partition keys a scoring function writes
FUNCTION_ACTIONS = [
    lambda_.CreateFunction, lambda_.GetFunction, lambda_.GetFunctionConfiguration, lambda_.UpdateFunctionCode,
    lambda_.UpdateFunctionConfiguration, lambda_.PublishVersion, lambda_.DeleteFunction, lambda_.TagResource,
    lambda_.GetAlias, lambda_.CreateAlias, lambda_.UpdateAlias, lambda_.DeleteAlias,
    lambda_.PutFunctionConcurrency, lambda_.DeleteFunctionConcurrency, lambda_.PutProvisionedConcurrencyConfig,
    lambda_.GetProvisionedConcurrencyConfig, lambda_.DeleteProvisionedConcurrencyConfig, lambda_.InvokeFunction,
]
SECRETS_ACTIONS = [secrets.CreateSecret, secrets.PutSecretValue, secrets.GetSecretValue, secrets.DeleteSecret]


def _function_log_groups() -> str:
    return f"/aws/lambda/{scoring_function_prefix(STAGE)}*"


def scoring_role(artifacts: s3.Bucket, table: dynamodb.Table) -> iam.Role:
    """Read models (and the source folders of image functions), record telemetry and captured requests,
    write its own logs."""
    return service_role(
        TITLE, scoring_role_name(STAGE), "Execution role of the Nimbus scoring functions (${Stage})", LAMBDA_SERVICE,
        Policies=[inline(
            "scoring",
            allow("ReadModels", [awacs.s3.GetObject], objects(artifacts, MODEL_OBJECTS)),
            allow("ReadSources", [awacs.s3.GetObject], [objects(artifacts, pattern) for pattern in SOURCE_OBJECTS]),
            allow("WriteCaptures", [awacs.s3.PutObject], objects(artifacts, CAPTURE_OBJECTS)),
            allow("WriteTelemetry", [awacs.dynamodb.UpdateItem], arn_of(table),
                  ForAllValuesStringLike("dynamodb:LeadingKeys", TELEMETRY_KEYS)),
            allow("Logs", FUNCTION_LOGS, log_groups(_function_log_groups())),
        )],
    )


def api_statements(role: iam.Role) -> list[Statement]:
    """Deploy scoring functions with this role (passed to Lambda only), read their logs, keep their secrets
    under the Secrets port's default prefix."""
    return [
        allow("ScoringFunctions", FUNCTION_ACTIONS, arn("lambda", f"function:{scoring_function_prefix(STAGE)}*")),
        allow("PassScoringRole", [awacs.iam.PassRole], arn_of(role),
              StringEquals("iam:PassedToService", LAMBDA_SERVICE)),
        allow("ScoringLogs", [awacs.logs.DescribeLogStreams, awacs.logs.FilterLogEvents],
              log_groups(_function_log_groups(), streams="*")),
        allow("Secrets", SECRETS_ACTIONS, arn("secretsmanager", f"secret:{secrets_prefix(STAGE)}*")),
    ]
