"""What the API functions may do, and nothing else: the managed policy `ApiFunctionPolicy`, and the role
it is attached to, which is Chalice's.

Each part of the stack says what the API may do with it (scoring, batch, images, run_tokens); this module
adds the table, the bucket and the functions' own logs, and gathers them in one policy.
"""
from __future__ import annotations

import awacs.dynamodb as ddb
import awacs.s3
from awacs.aws import Statement
from troposphere import Ref, Sub, dynamodb, iam, s3

from .names import STAGE, api_log_groups
from .policy import FUNCTION_LOGS, LAMBDA_SERVICE, allow, arn_of, document, log_groups, objects, trust

TITLE = "ApiFunctionPolicy"
# The logical id of the role `chalice package` gives every function of the app when it manages the role and
# autogenerates its policy (.chalice/config.json sets neither autogen_policy nor a policy file).
CHALICE_ROLE = "DefaultRole"
# No Scan: every access path is a key or index query. TransactWriteItems is not an IAM action of its own: a
# transaction is authorized by the PutItem/UpdateItem/DeleteItem/ConditionCheckItem permissions of its items.
TABLE_ACTIONS = [ddb.GetItem, ddb.PutItem, ddb.UpdateItem, ddb.DeleteItem, ddb.Query, ddb.BatchWriteItem,
                 ddb.ConditionCheckItem]
OBJECT_ACTIONS = [awacs.s3.GetObject, awacs.s3.PutObject, awacs.s3.DeleteObject]


def data_statements(table: dynamodb.Table, artifacts: s3.Bucket) -> list[Statement]:
    """The table and its indexes, the bucket's objects (and listing them), the function's own logs."""
    return [
        allow("Table", TABLE_ACTIONS, [arn_of(table), Sub(f"${{{table.title}.Arn}}/index/*")]),
        allow("ArtifactObjects", OBJECT_ACTIONS, objects(artifacts, "*")),
        allow("ArtifactBucket", [awacs.s3.ListBucket], arn_of(artifacts)),
        allow("Logs", FUNCTION_LOGS, log_groups(api_log_groups(STAGE))),
    ]


def chalice_role() -> iam.Role:
    """Chalice's role, declared in full: in the merged template this declaration replaces Chalice's, so the
    role has no inline policy (Chalice's would allow logs on every log group), only ApiFunctionPolicy."""
    return iam.Role(CHALICE_ROLE, Description=Sub("Role of the Nimbus API functions (${Stage})"),
                    AssumeRolePolicyDocument=trust(LAMBDA_SERVICE), Policies=[])


def api_function_policy(role: iam.Role, statements: list[Statement]) -> iam.ManagedPolicy:
    """Attached from the policy's side (`Roles`), which moto's CloudFormation applies and tests."""
    return iam.ManagedPolicy(TITLE, Description=Sub("Least privilege of the Nimbus API function (${Stage})"),
                             PolicyDocument=document(*statements), Roles=[Ref(role)])
