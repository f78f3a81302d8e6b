"""Generate the CloudFormation template (and the Chalice IAM policy files) from the code.

    python infra/build.py          # rewrite infra/template.json and .chalice/policy-<stage>.json
    python infra/build.py --check  # exit 1 if any committed file differs from what the code says

The table's keys and indexes come from chalicelib.store.schema, so the deployed table, the moto
fixtures and the SQLite adapter cannot disagree. The API function's permissions are declared once,
here, and written both as the template's managed policy and as the Chalice stage policy files.
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
CHALICE_DIR = ROOT / ".chalice"
STAGES = ("dev", "prod")
APP_NAME = "nimbus"

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


def table_name(stage: str) -> str:
    """The table of a stage (a literal stage, or "${Stage}" inside the template)."""
    return f"{APP_NAME}-{stage}"


def bucket_name(stage: str) -> str:
    return f"{APP_NAME}-{stage}-artifacts"


def _sub(text: str) -> dict:
    return {"Fn::Sub": text}


def _policy_statements(table_arn, index_arn, bucket_arn, objects_arn, log_group_arns) -> list[dict]:
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
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": _policy_statements(
                    table_arn={"Fn::GetAtt": ["NimbusTable", "Arn"]},
                    index_arn=_sub("${NimbusTable.Arn}/index/*"),
                    bucket_arn={"Fn::GetAtt": ["ArtifactBucket", "Arn"]},
                    objects_arn=_sub("${ArtifactBucket.Arn}/*"),
                    log_group_arns=[_sub(log_groups), _sub(f"{log_groups}:log-stream:*")],
                ),
            },
        },
    }


def template() -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Nimbus data plane: the DynamoDB table, the artifact bucket and the API function's policy.",
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
        },
        "Outputs": {
            "TableName": {"Value": {"Ref": "NimbusTable"}},
            "TableArn": {"Value": {"Fn::GetAtt": ["NimbusTable", "Arn"]}},
            "BucketName": {"Value": {"Ref": "ArtifactBucket"}},
            "ApiFunctionPolicyArn": {"Value": {"Ref": "ApiFunctionPolicy"}},
        },
    }


def stage_policy(stage: str) -> dict:
    """The Chalice IAM policy of one stage: the managed policy's statements with literal ARNs.

    Only the account and region positions are wildcards (Chalice policy files cannot reference them).
    """
    table = f"arn:aws:dynamodb:*:*:table/{table_name(stage)}"
    bucket = f"arn:aws:s3:::{bucket_name(stage)}"
    log_group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{APP_NAME}-{stage}*"
    return {
        "Version": "2012-10-17",
        "Statement": _policy_statements(
            table_arn=table,
            index_arn=f"{table}/index/*",
            bucket_arn=bucket,
            objects_arn=f"{bucket}/*",
            log_group_arns=[log_group, f"{log_group}:log-stream:*"],
        ),
    }


def _dump(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def render() -> str:
    """The exact text of infra/template.json."""
    return _dump(template())


def outputs() -> dict[Path, str]:
    """Every generated file and its expected text."""
    files = {TEMPLATE_PATH: render()}
    for stage in STAGES:
        files[CHALICE_DIR / f"policy-{stage}.json"] = _dump(stage_policy(stage))
    return files


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
