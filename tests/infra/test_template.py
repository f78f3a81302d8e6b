"""The CloudFormation template: generated from the code, lint-clean, deployable, packageable with Chalice."""
from __future__ import annotations

import ast
import copy
import fnmatch
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chalicelib.compute import image_build
from chalicelib.compute.batch import spec as batch_spec
from chalicelib.hosting import lambda_package
from chalicelib.settings import Settings
from chalicelib.store import schema
from infra import build
from infra.stack import api_policy, images, names, run_tokens
from nimbus.runtime import sealed_token

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.json"
BIN = Path(sys.executable).parent


def _template() -> dict:
    return json.loads(TEMPLATE.read_text(encoding="utf-8"))


def _cfn_lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "cfn-lint"), str(path)], capture_output=True, text=True, timeout=300
    )


def _statements_by_sid(document: dict) -> dict[str, dict]:
    return {statement["Sid"]: statement for statement in document["Statement"]}


REGION, ACCOUNT = "us-east-1", "123456789012"  # where moto deploys
# moto's CloudFormation warns of the types it skips (their properties are asserted on the template)
MOTO_SKIPS = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS.{2}(S3.{2}BucketPolicy|CodeBuild.{2}Project):UserWarning")


def _deploy(stage: str, **parameters: str) -> dict[str, str]:
    """Creates the stage's stack in moto's CloudFormation (inside aws_env); returns its outputs."""
    import boto3

    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(
        StackName=f"nimbus-{stage}",
        TemplateBody=TEMPLATE.read_text(encoding="utf-8"),
        Parameters=[{"ParameterKey": key, "ParameterValue": value}
                    for key, value in {"Stage": stage, **parameters}.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    (stack,) = cloudformation.describe_stacks(StackName=f"nimbus-{stage}")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def _deployed_api_policy(outputs: dict[str, str]) -> dict[str, dict]:
    """The API policy's statements as deployed: every ARN resolved for the stage, account and region."""
    import boto3

    iam = boto3.client("iam", region_name=REGION)
    policy = iam.get_policy(PolicyArn=outputs["ApiFunctionPolicyArn"])["Policy"]
    version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
    return _statements_by_sid(version["PolicyVersion"]["Document"])


@pytest.fixture
def stage_policies(aws_env) -> dict[str, dict[str, dict]]:
    """Each stage's API policy, deployed."""
    return {stage: _deployed_api_policy(_deploy(stage)) for stage in names.STAGES}


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


# --- the generated files match the code -------------------------------------------------------


def test_committed_files_match_the_code():
    assert build.stale() == [], "run `python infra/build.py` and commit the result"
    assert TEMPLATE.read_text(encoding="utf-8") == build.render()


def test_check_flag_fails_on_drift(tmp_path, monkeypatch):
    drifted = tmp_path / "template.json"
    drifted.write_text(build.render().replace("PAY_PER_REQUEST", "PROVISIONED"), encoding="utf-8")
    monkeypatch.setattr(build, "TEMPLATE_PATH", drifted)
    assert build.main(["--check"]) == 1


def test_table_has_exactly_the_schema_keys_and_indexes():
    table = _template()["Resources"]["NimbusTable"]
    properties = table["Properties"]
    expected = schema.dynamodb_table_definition("ignored")
    for key in ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "BillingMode"):
        assert properties[key] == expected[key], key
    assert properties["TableName"] == {"Fn::Sub": "nimbus-${Stage}"}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_bucket_is_private_encrypted_versioned_and_tls_only():
    resources = _template()["Resources"]
    bucket = resources["ArtifactBucket"]
    properties = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(properties["PublicAccessBlockConfiguration"].values())
    assert len(properties["PublicAccessBlockConfiguration"]) == 4
    assert properties["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    (rule,) = properties["LifecycleConfiguration"]["Rules"]
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    (deny,) = resources["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _origins(document) -> list:
    """Every AllowedOrigins value anywhere in `document`."""
    if isinstance(document, dict):
        return [*document.get("AllowedOrigins", []), *(o for v in document.values() for o in _origins(v))]
    return [o for v in document for o in _origins(v)] if isinstance(document, list) else []


def test_the_bucket_allows_browser_transfers_from_the_studio_origin_only():
    stack = _template()
    # When an origin is configured: presigned PUT and GET from it, and from no other
    condition, cors, no_origin = stack["Resources"]["ArtifactBucket"]["Properties"]["CorsConfiguration"]["Fn::If"]
    (rule,) = cors["CorsRules"]
    assert set(rule["AllowedMethods"]) == {"PUT", "GET"} and rule["AllowedOrigins"] == [{"Ref": "StudioOrigin"}]
    assert "ETag" in rule["ExposedHeaders"]  # multipart uploads read each part's ETag
    # When none is: no CORS rule at all (the parameter's default)
    assert no_origin == {"Ref": "AWS::NoValue"}
    assert stack["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "StudioOrigin"}, ""]}]}
    parameter = stack["Parameters"]["StudioOrigin"]
    assert parameter["Type"] == "String" and parameter["Default"] == ""
    # CloudFormation refuses a wildcard, a path or a list as the origin
    pattern = re.compile(parameter["AllowedPattern"])
    for origin in ("", "https://studio.example.com", "http://localhost:5173"):
        assert pattern.fullmatch(origin), origin
    for origin in ("*", "https://*.example.com", "https://studio.example.com/", "https://a.example,https://b.example",
                   "null"):
        assert not pattern.fullmatch(origin), origin
    # and no origin is "*" anywhere in the template
    assert _origins(stack) == [{"Ref": "StudioOrigin"}]


def test_api_policy_is_least_privilege():
    document = _template()["Resources"]["ApiFunctionPolicy"]["Properties"]["PolicyDocument"]
    actions = [a for s in document["Statement"] for a in s["Action"]]
    assert "dynamodb:Scan" not in actions
    assert not any(a.endswith("*") for a in actions)
    for statement in document["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Sid"] == "BatchRead":  # Batch's Describe* actions have no resource-level permissions
            assert all(a.startswith("batch:Describe") for a in statement["Action"])
            continue
        assert "*" not in resources


def test_chalice_declares_the_role_the_template_gives_the_api_policy():
    """Chalice manages the functions' role and would autogenerate its policy (its defaults, no policy file):
    it then declares one role, DefaultRole, for every function, which the template replaces (see the
    chalice package test below)."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    for scope in (config, *config["stages"].values()):
        assert scope.get("manage_iam_role", True) is True and scope.get("autogen_policy", True) is True
        assert "iam_policy_file" not in scope and "iam_role_arn" not in scope
    assert not list((ROOT / ".chalice").glob("policy-*.json"))
    role = _template()["Resources"][api_policy.CHALICE_ROLE]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert role["Properties"]["Policies"] == []  # replaces the inline policy Chalice would generate
    assert "ManagedPolicyArns" not in role["Properties"]
    policy = _template()["Resources"]["ApiFunctionPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": api_policy.CHALICE_ROLE}]


@MOTO_SKIPS
@pytest.mark.parametrize("stage", names.STAGES)
def test_the_stage_config_names_what_the_deployed_api_policy_grants(stage, stage_policies):
    config = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    policy = stage_policies[stage]
    # The function is told the same names the template gives the table and the bucket.
    env = config["stages"][stage]["environment_variables"]
    assert env["NIMBUS_BACKEND"] == "aws"
    assert env["NIMBUS_TABLE"] == names.table_name(stage)
    assert env["NIMBUS_BUCKET"] == names.bucket_name(stage)
    assert policy["Table"]["Resource"][0] == _arn("dynamodb", f"table/{env['NIMBUS_TABLE']}")
    assert policy["ArtifactBucket"]["Resource"] == f"arn:aws:s3:::{env['NIMBUS_BUCKET']}"
    # Scoring functions: the role the stage passes them, the names the host gives them, the secrets.
    assert env["NIMBUS_SCORING_ROLE_ARN"] == names.scoring_role_name(stage)
    assert policy["PassScoringRole"]["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/{env['NIMBUS_SCORING_ROLE_ARN']}"
    settings = Settings.from_env(env)
    prefix = lambda_package.function_prefix(settings.table_name)
    assert policy["ScoringFunctions"]["Resource"] == _arn("lambda", f"function:{prefix}*")
    assert lambda_package.function_name(settings.table_name, "ws", "ep").startswith(prefix)
    assert policy["Secrets"]["Resource"] == _arn("secretsmanager", f"secret:{settings.secret_name_prefix}*")
    # Batch: the names the adapters give resources are those the policy grants, the roles those it passes
    prefix = names.batch_prefix(stage)
    assert batch_spec.resource_name(settings.table_name, "ws", "gpu").startswith(prefix)
    assert batch_spec.job_definition_name(settings.table_name, None).startswith(prefix)
    assert batch_spec.job_definition_name(settings.table_name, {"hash": "ab" * 32}).startswith(prefix)
    assert _arn("batch", f"job-queue/{prefix}*") in policy["BatchJobs"]["Resource"]
    for kind, configured in (("job", settings.batch_job_role_arn), ("execution", settings.batch_execution_role_arn),
                             ("instance", settings.batch_instance_role_arn)):
        assert configured == names.batch_role_name(stage, kind)
        assert f"arn:aws:iam::{ACCOUNT}:role/{configured}" in policy["PassBatchRoles"]["Resource"]
    # Environment images: the project the stage starts builds on, the repositories it makes
    assert env["NIMBUS_CODEBUILD_PROJECT"] == settings.codebuild_project == names.image_project_name(stage)
    assert policy["ImageBuilds"]["Resource"] == _arn("codebuild", f"project/{settings.codebuild_project}")
    repository = image_build.repository_name(settings.table_name, '-ws--x-')
    assert fnmatch.fnmatchcase(_arn("ecr", f"repository/{repository}"), policy["ImageRepositories"]["Resource"])
    other = next(s for s in names.STAGES if s != stage)  # stages sharing an account share no repository
    theirs = image_build.repository_name(names.table_name(other), "ws")
    assert not fnmatch.fnmatchcase(_arn("ecr", f"repository/{theirs}"), policy["ImageRepositories"]["Resource"])


def test_api_policy_lets_the_api_manage_scoring_functions_and_secrets():
    statements = _statements_by_sid(_template()["Resources"]["ApiFunctionPolicy"]["Properties"]["PolicyDocument"])
    lambda_actions = set(statements["ScoringFunctions"]["Action"])
    for operation in ("CreateFunction", "UpdateFunctionCode", "UpdateFunctionConfiguration", "PublishVersion",
                      "CreateAlias", "UpdateAlias", "DeleteAlias", "PutFunctionConcurrency",
                      "PutProvisionedConcurrencyConfig", "DeleteFunction", "InvokeFunction",
                      "GetFunctionConfiguration", "GetAlias"):
        assert f"lambda:{operation}" in lambda_actions, operation
    assert statements["ScoringFunctions"]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:nimbus-${Stage}-score-*"
    }
    assert statements["PassScoringRole"]["Action"] == ["iam:PassRole"]
    assert statements["PassScoringRole"]["Resource"] == {"Fn::GetAtt": ["ScoringFunctionRole", "Arn"]}
    assert statements["PassScoringRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
    assert set(statements["Secrets"]["Action"]) == {
        "secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:GetSecretValue",
        "secretsmanager:DeleteSecret"}
    assert "logs:FilterLogEvents" in statements["ScoringLogs"]["Action"]


def test_scoring_role_reads_models_and_writes_telemetry_only():
    role = _template()["Resources"]["ScoringFunctionRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"} and trust["Action"] == ["sts:AssumeRole"]
    (policy,) = role["Policies"]
    statements = _statements_by_sid(policy["PolicyDocument"])
    assert statements["ReadModels"]["Action"] == ["s3:GetObject"]
    assert statements["ReadModels"]["Resource"] == {"Fn::Sub": "${ArtifactBucket.Arn}/workspaces/*/models/*"}
    assert statements["WriteCaptures"]["Action"] == ["s3:PutObject"]
    assert statements["WriteTelemetry"]["Action"] == ["dynamodb:UpdateItem"]
    assert statements["WriteTelemetry"]["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["TELE#*"]}}
    assert set(statements["Logs"]["Action"]) == {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}


def test_api_policy_lets_the_api_run_batch_on_the_stage_resources_only():
    statements = _statements_by_sid(_template()["Resources"]["ApiFunctionPolicy"]["Properties"]["PolicyDocument"])
    batch = "arn:${AWS::Partition}:batch:${AWS::Region}:${AWS::AccountId}"
    assert set(statements["BatchClusters"]["Action"]) >= {
        "batch:CreateComputeEnvironment", "batch:UpdateComputeEnvironment", "batch:DeleteComputeEnvironment",
        "batch:CreateJobQueue", "batch:UpdateJobQueue", "batch:DeleteJobQueue"}
    assert statements["BatchClusters"]["Resource"] == [
        {"Fn::Sub": f"{batch}:compute-environment/nimbus-${{Stage}}-*"}, {"Fn::Sub": f"{batch}:job-queue/nimbus-${{Stage}}-*"}]
    assert set(statements["BatchJobs"]["Action"]) == {"batch:SubmitJob", "batch:RegisterJobDefinition",
                                                      "batch:TerminateJob", "batch:TagResource"}
    assert {"Fn::Sub": f"{batch}:job-definition/nimbus-${{Stage}}-*"} in statements["BatchJobs"]["Resource"]
    assert set(statements["BatchRead"]["Action"]) == {"batch:DescribeJobs", "batch:DescribeJobDefinitions",
                                                      "batch:DescribeJobQueues", "batch:DescribeComputeEnvironments"}
    assert statements["PassBatchRoles"]["Resource"] == [
        {"Fn::GetAtt": [name, "Arn"]} for name in ("BatchJobRole", "BatchExecutionRole", "BatchInstanceRole")]
    assert statements["BatchServiceLinkedRole"]["Condition"] == {
        "StringEquals": {"iam:AWSServiceName": "batch.amazonaws.com"}}


def test_the_runner_role_may_write_its_logs_and_open_its_sealed_token_and_nothing_else():
    resources = _template()["Resources"]
    role = resources["BatchJobRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    (policy,) = role["Policies"]
    logs, opening = policy["PolicyDocument"]["Statement"]
    assert logs["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert all("/aws/batch/job" in r["Fn::Sub"] for r in logs["Resource"])
    assert opening == {"Sid": "OpenRunTokens", "Effect": "Allow", "Action": ["kms:Decrypt"],
                       "Resource": {"Fn::GetAtt": ["RunTokenKey", "Arn"]}, "Condition": RUN_CONTEXT_ONLY}
    assert "ManagedPolicyArns" not in role
    assert resources["BatchInstanceProfile"]["Properties"]["Roles"] == [{"Ref": "BatchInstanceRole"}]


# --- run tokens sealed with KMS ---------------------------------------------------------------

RUN_CONTEXT_ONLY = {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": [sealed_token.CONTEXT_KEY]},
                    "Null": {"kms:EncryptionContextKeys": "false"}}


def _all_statements(resources: dict) -> list[dict]:
    """Every IAM statement of the template: managed policies, inline role policies and key policies."""
    found = []
    for resource in resources.values():
        properties = resource.get("Properties", {})
        documents = [properties.get("PolicyDocument"), properties.get("KeyPolicy")]
        documents += [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
        found += [s for document in documents if document for s in document["Statement"]]
    return found


def test_the_run_token_key_is_symmetric_rotated_and_administered_by_the_account():
    resources = _template()["Resources"]
    key = resources["RunTokenKey"]["Properties"]
    assert key["KeySpec"] == "SYMMETRIC_DEFAULT" and key["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert key["EnableKeyRotation"] is True and key["Enabled"] is True
    assert 7 <= key["PendingWindowInDays"] <= 30
    # The account owns the key (AWS's default key policy): IAM policies decide who uses it.
    (owner,) = key["KeyPolicy"]["Statement"]
    assert owner["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    assert owner["Effect"] == "Allow" and owner["Action"] == ["kms:*"] and owner["Resource"] == ["*"]
    alias = resources["RunTokenKeyAlias"]["Properties"]
    assert alias == {"AliasName": {"Fn::Sub": "alias/nimbus-${Stage}-run-tokens"}, "TargetKeyId": {"Ref": "RunTokenKey"}}
    for stage in names.STAGES:
        assert names.run_token_key_alias(stage) == f"alias/nimbus-{stage}-run-tokens"


def test_the_api_may_only_seal_run_tokens_and_only_the_runner_may_open_them():
    resources = _template()["Resources"]
    statements = _statements_by_sid(resources["ApiFunctionPolicy"]["Properties"]["PolicyDocument"])
    alias = {"Fn::Sub": "alias/nimbus-${Stage}-run-tokens"}
    assert statements["SealRunTokens"] == {
        "Sid": "SealRunTokens", "Effect": "Allow", "Action": ["kms:Encrypt"],
        "Resource": {"Fn::GetAtt": ["RunTokenKey", "Arn"]},
        "Condition": {"StringEquals": {"kms:RequestAlias": alias}, **RUN_CONTEXT_ONLY}}
    # Outside the key policy, the two statements above are the only ones naming any KMS action.
    kms = [(s.get("Sid"), s["Action"]) for s in _all_statements(resources) if "Principal" not in s
           and any(a.startswith("kms:") for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))]
    assert sorted(kms) == [("OpenRunTokens", ["kms:Decrypt"]), ("SealRunTokens", ["kms:Encrypt"])]


@MOTO_SKIPS
def test_stage_policies_seal_through_the_alias_the_stage_config_names(stage_policies):
    config = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    for stage in names.STAGES:
        env = config["stages"][stage]["environment_variables"]
        settings = Settings.from_env(env)
        assert env["NIMBUS_RUN_TOKEN_KEY"] == settings.run_token_key == names.run_token_key_alias(stage)
        sealing = stage_policies[stage]["SealRunTokens"]
        assert sealing["Action"] == ["kms:Encrypt"] and sealing["Resource"].startswith(_arn("kms", "key/"))
        assert sealing["Condition"] == {"StringEquals": {"kms:RequestAlias": settings.run_token_key},
                                        **RUN_CONTEXT_ONLY}
        # What the dispatcher sends meets the conditions: the key named by the alias, the run's context only
        request = sealed_token.encrypt_request(settings.run_token_key, "0" * 22, "nmb_x")
        assert request["KeyId"] == sealing["Condition"]["StringEquals"]["kms:RequestAlias"]
        assert list(request["EncryptionContext"]) == RUN_CONTEXT_ONLY["ForAllValues:StringEquals"][
            "kms:EncryptionContextKeys"]
    assert run_tokens.CONTEXT_KEY == sealed_token.CONTEXT_KEY


@MOTO_SKIPS
def test_api_policy_grants_exactly_the_image_build_calls(stage_policies):
    statements = _statements_by_sid(_template()["Resources"]["ApiFunctionPolicy"]["Properties"]["PolicyDocument"])
    assert statements["ImageBuilds"] == {
        "Sid": "ImageBuilds", "Effect": "Allow", "Action": ["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:codebuild:${AWS::Region}:${AWS::AccountId}"
                                ":project/nimbus-${Stage}-images"}}
    assert statements["ImageRepositories"] == {
        "Sid": "ImageRepositories", "Effect": "Allow",
        "Action": ["ecr:CreateRepository", "ecr:DescribeRepositories", "ecr:TagResource"],
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/nimbus-${Stage}/*"}}
    # No other statement grants CodeBuild or ECR actions to the API (ScoringImages: the image functions' pull)
    others = [a for sid, s in statements.items() if sid not in ("ImageBuilds", "ImageRepositories", "ScoringImages")
              for a in s["Action"]]
    assert not [a for a in others if a.startswith(("codebuild:", "ecr:"))]
    for stage, policy in stage_policies.items():
        assert policy["ImageBuilds"]["Resource"] == _arn("codebuild", f"project/nimbus-{stage}-images")
        assert policy["ImageRepositories"]["Resource"] == _arn("ecr", f"repository/nimbus-{stage}/*")


@MOTO_SKIPS
def test_api_policy_lets_lambda_pull_the_environment_images_of_scoring_functions(stage_policies):
    statements = _statements_by_sid(_template()["Resources"]["ApiFunctionPolicy"]["Properties"]["PolicyDocument"])
    # Creating an image function needs read access to the image, and the repository policy actions with
    # which Lambda grants its service the pull
    assert statements["ScoringImages"] == {
        "Sid": "ScoringImages", "Effect": "Allow",
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:GetRepositoryPolicy",
                   "ecr:SetRepositoryPolicy"],
        "Resource": statements["ImageRepositories"]["Resource"]}
    for stage, policy in stage_policies.items():
        assert policy["ScoringImages"]["Resource"] == _arn("ecr", f"repository/{names.table_name(stage)}/*")
        assert fnmatch.fnmatchcase(_arn("ecr", f"repository/{image_build.repository_name(names.table_name(stage), 'team')}"),
                                   policy["ScoringImages"]["Resource"])


def test_scoring_role_reads_the_source_manifests_and_snapshot_contents_of_image_functions():
    from chalicelib.services import snapshots

    role = _template()["Resources"]["ScoringFunctionRole"]["Properties"]
    statements = _statements_by_sid(role["Policies"][0]["PolicyDocument"])
    assert statements["ReadSources"]["Action"] == ["s3:GetObject"]
    patterns = [r["Fn::Sub"].replace("${ArtifactBucket.Arn}/", "") for r in statements["ReadSources"]["Resource"]]
    # The keys the host writes and the manifest lists match them
    key = lambda_package.source_manifest_key(lambda_package.function_name("nimbus-dev", "ws", "ep"), "blue", 3)
    assert any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns), key
    content = f"workspaces/ws-1/{snapshots.CONTENT}ab12"
    assert any(fnmatch.fnmatchcase(content, pattern) for pattern in patterns), content
    assert not any(fnmatch.fnmatchcase("workspaces/ws-1/runs/x/outputs/y", pattern) for pattern in patterns)


def test_the_image_build_project_accepts_what_the_api_sends():
    resources = _template()["Resources"]
    project = resources["ImageBuildProject"]
    assert project["Type"] == "AWS::CodeBuild::Project"
    properties = project["Properties"]
    assert properties["Name"] == {"Fn::Sub": "nimbus-${Stage}-images"}
    assert properties["ServiceRole"] == {"Fn::GetAtt": ["ImageBuildRole", "Arn"]}
    assert properties["Environment"]["Type"] == "LINUX_CONTAINER"
    assert properties["Environment"]["Image"].startswith("aws/codebuild/standard:")
    assert properties["Environment"]["PrivilegedMode"] is True
    assert properties["Artifacts"] == {"Type": "NO_ARTIFACTS"}
    assert properties["Source"]["Type"] == "NO_SOURCE" and properties["Source"]["BuildSpec"]
    assert properties["LogsConfig"]["CloudWatchLogs"] == {"Status": "ENABLED", "GroupName": {"Ref": "ImageBuildLogGroup"}}
    assert resources["ImageBuildLogGroup"]["Properties"]["LogGroupName"] == {
        "Fn::Sub": "/aws/codebuild/nimbus-${Stage}-images"}
    # The API brings the source (S3), the buildspec and privileged mode with every build
    request = image_build.start_build_request("nimbus-dev-images", "nimbus-dev-artifacts",
                                              "workspaces/team-1/environments/abc/context.zip", "version: 0.2\n")
    assert request["projectName"] == names.image_project_name("dev")
    assert request["sourceTypeOverride"] == "S3" and request["buildspecOverride"]
    assert request["sourceLocationOverride"].startswith(names.bucket_name("dev") + "/")
    assert request["artifactsOverride"] == {"type": properties["Artifacts"]["Type"]} == {"type": "NO_ARTIFACTS"}
    assert request["privilegedModeOverride"] is True
    assert set(request) == {"projectName", "sourceTypeOverride", "sourceLocationOverride", "buildspecOverride",
                            "artifactsOverride", "privilegedModeOverride"}  # no role or image override: no PassRole


def test_the_image_build_role_reads_contexts_writes_logs_and_pushes_only():
    role = _template()["Resources"]["ImageBuildRole"]["Properties"]
    assert role["RoleName"] == {"Fn::Sub": "nimbus-${Stage}-images-build"}
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "codebuild.amazonaws.com"} and trust["Action"] == ["sts:AssumeRole"]
    assert "ManagedPolicyArns" not in role
    (policy,) = role["Policies"]
    statements = _statements_by_sid(policy["PolicyDocument"])
    assert set(statements) == {"ReadContexts", "SourceBucket", "WriteBuildLogs", "RegistryLogin", "PushImages", "Logs"}
    assert statements["ReadContexts"]["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert statements["ReadContexts"]["Resource"] == {
        "Fn::Sub": "${ArtifactBucket.Arn}/workspaces/*/environments/*/context.zip"}
    assert statements["SourceBucket"]["Action"] == ["s3:GetBucketLocation", "s3:GetBucketAcl"]
    assert statements["WriteBuildLogs"]["Action"] == ["s3:PutObject"]
    assert statements["WriteBuildLogs"]["Resource"] == {
        "Fn::Sub": "${ArtifactBucket.Arn}/workspaces/*/environments/*/build.log"}
    # ecr:GetAuthorizationToken has no resource-level permissions; it is the only action granted on "*"
    assert statements["RegistryLogin"] == {"Sid": "RegistryLogin", "Effect": "Allow",
                                           "Action": ["ecr:GetAuthorizationToken"], "Resource": ["*"]}
    assert set(statements["PushImages"]["Action"]) == {
        "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload", "ecr:PutImage"}
    assert statements["PushImages"]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/nimbus-${Stage}/*"}
    assert statements["Logs"]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert all("/aws/codebuild/nimbus-${Stage}-images" in r["Fn::Sub"] for r in statements["Logs"]["Resource"])


@MOTO_SKIPS
def test_image_builds_make_only_the_calls_and_keys_the_policies_grant(aws_env):
    """The API's image build code under moto, on the dev stack: every CodeBuild/ECR operation it calls is one
    the API policy grants, every object the build reads or writes matches the build role's object patterns."""
    import boto3

    from chalicelib.wiring import build_services
    from chalicelib.services.environments import definition_hash, normalize_definition
    from chalicelib.services.identity import Principal

    config = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    env = dict(config["stages"]["dev"]["environment_variables"], AWS_REGION="us-east-1")
    settings = Settings.from_env(env)
    outputs = _deploy("dev")
    # moto's CloudFormation skips CodeBuild projects, and moto's create_project wants a source location
    boto3.client("codebuild", region_name="us-east-1").create_project(
        name=settings.codebuild_project, source={"type": "S3", "location": f"{settings.bucket}/none.zip"},
        artifacts={"type": "NO_ARTIFACTS"}, serviceRole=outputs["ImageBuildRoleArn"],
        environment={"type": "LINUX_CONTAINER", "image": images.CODEBUILD_IMAGE, "computeType": "BUILD_GENERAL1_SMALL",
                     "privilegedMode": True})
    services = build_services(settings)
    services.workspaces.create(Principal("admin", True, "t1"), "team")

    calls: list[tuple[str, dict]] = []  # (IAM action, request parameters)
    clients = {name: boto3.client(name, region_name="us-east-1") for name in ("codebuild", "ecr")}
    for name, client in clients.items():
        client.meta.events.register("provide-client-params", lambda params, model, _prefix=name, **_: calls.append(
            (f"{_prefix}:{model.name}", dict(params))))
    builds = image_build.ImageBuilds(services.ctx, **clients)
    started = []
    for pip in (["numpy==2.0.0"], ["pandas==2.2.0"]):  # the second finds the repository made by the first
        definition = normalize_definition(None, pip, None, None)
        started.append(builds.start("team", {"hash": definition_hash(definition), "definition": definition},
                                    services.workspaces.record("team")["blob_prefix"] + "environments/"))
        builds.refresh("team", started[-1]["hash"])
    assert all(item.get("build_id") for item in started), started

    statements = _deployed_api_policy(outputs)
    granted = {*statements["ImageBuilds"]["Action"], *statements["ImageRepositories"]["Action"]}
    called = {action for action, _ in calls}
    assert called <= granted, set(called) - granted
    assert {"codebuild:StartBuild", "codebuild:BatchGetBuilds", "ecr:CreateRepository",
            "ecr:DescribeRepositories"} <= called
    # Creating the repository with a tag is what needs ecr:TagResource
    assert all(params.get("tags") for action, params in calls if action == "ecr:CreateRepository")
    role = _statements_by_sid(_template()["Resources"]["ImageBuildRole"]["Properties"]["Policies"][0]["PolicyDocument"])
    contexts = role["ReadContexts"]["Resource"]["Fn::Sub"].replace("${ArtifactBucket.Arn}/", "")
    logs = role["WriteBuildLogs"]["Resource"]["Fn::Sub"].replace("${ArtifactBucket.Arn}/", "")
    requests = [params for action, params in calls if action == "codebuild:StartBuild"]
    assert len(requests) == 2 and all(r["projectName"] == names.image_project_name("dev") for r in requests)
    for request in requests:
        bucket, key = request["sourceLocationOverride"].split("/", 1)
        assert bucket == settings.bucket and fnmatch.fnmatchcase(key, contexts), key
        assert "serviceRoleOverride" not in request  # the project's own role: the API needs no iam:PassRole
    for item in started:
        assert fnmatch.fnmatchcase(item["log_key"], logs), item["log_key"]
        repository = item["image_uri"].split("/", 1)[1].split(":")[0]
        assert fnmatch.fnmatchcase(_arn("ecr", f"repository/{repository}"), statements["ImageRepositories"]["Resource"])


# --- cfn-lint ---------------------------------------------------------------------------------


def test_cfn_lint_passes_on_the_template():
    result = _cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path):
    """Guards the lint test above against passing vacuously."""
    broken = copy.deepcopy(_template())
    broken["Resources"]["ArtifactBucket"]["Properties"]["VersioningConfiguration"]["Status"] = "On"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    result = _cfn_lint(path)
    assert result.returncode != 0 and "E3030" in result.stdout, result.stdout


# --- moto's CloudFormation --------------------------------------------------------------------


@MOTO_SKIPS
def test_template_deploys_into_moto(aws_env):
    import boto3

    outputs = _deploy("dev", StudioOrigin="https://studio.example.com")  # the other tests deploy without one
    assert outputs["TableName"] == "nimbus-dev"
    assert outputs["TableArn"].endswith(":table/nimbus-dev")
    assert outputs["BucketName"] == "nimbus-dev-artifacts"

    expected = schema.dynamodb_table_definition("nimbus-dev")
    table = boto3.client("dynamodb", region_name="us-east-1").describe_table(TableName="nimbus-dev")["Table"]
    assert table["KeySchema"] == expected["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    assert {i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in table["GlobalSecondaryIndexes"]} == {
        i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in expected["GlobalSecondaryIndexes"]
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    # Not asserted here, because moto 5.2.5's CloudFormation drops them (the template tests above
    # cover them): PointInTimeRecoverySpecification (describe_continuous_backups says DISABLED) and
    # SSESpecification (moto reads the API's "Enabled", not CloudFormation's "SSEEnabled").

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.head_bucket(Bucket="nimbus-dev-artifacts")
    (rule,) = s3.get_bucket_encryption(Bucket="nimbus-dev-artifacts")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # Not asserted here: moto 5.2.5 creates an AWS::S3::Bucket from BucketName, BucketEncryption and
    # Tags only, so versioning, the public access block, ownership controls, CORS and the lifecycle
    # rule read back as unset; and it skips AWS::S3::BucketPolicy altogether. Those are checked on the
    # template itself (test_bucket_is_private_encrypted_versioned_and_tls_only) and by cfn-lint.

    iam = boto3.client("iam", region_name="us-east-1")
    statements = _deployed_api_policy(outputs)
    assert statements["Table"]["Resource"] == [outputs["TableArn"], outputs["TableArn"] + "/index/*"]
    assert statements["ArtifactObjects"]["Resource"] == "arn:aws:s3:::nimbus-dev-artifacts/*"
    assert statements["PassScoringRole"]["Resource"] == outputs["ScoringRoleArn"]
    assert statements["ScoringFunctions"]["Resource"] == "arn:aws:lambda:us-east-1:123456789012:function:nimbus-dev-score-*"
    # The API functions' role (Chalice's, once merged) has that policy and no other
    attached_to = iam.list_entities_for_policy(PolicyArn=outputs["ApiFunctionPolicyArn"])["PolicyRoles"]
    (api_role,) = [role["RoleName"] for role in attached_to]
    assert api_role.startswith(f"nimbus-dev-{api_policy.CHALICE_ROLE}")
    attached = iam.list_attached_role_policies(RoleName=api_role)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [outputs["ApiFunctionPolicyArn"]]
    assert iam.list_role_policies(RoleName=api_role)["PolicyNames"] == []

    # The scoring functions' role, under the name the dev stage gives NIMBUS_SCORING_ROLE_ARN
    role = iam.get_role(RoleName=names.scoring_role_name("dev"))["Role"]
    assert role["Arn"] == outputs["ScoringRoleArn"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    inline = iam.get_role_policy(RoleName=role["RoleName"], PolicyName="scoring")["PolicyDocument"]
    if isinstance(inline, str):  # moto 5.2.5 stores a CloudFormation inline policy as the dict's repr
        inline = ast.literal_eval(inline)
    scoring = _statements_by_sid(inline)
    assert scoring["ReadModels"]["Resource"] == "arn:aws:s3:::nimbus-dev-artifacts/workspaces/*/models/*"
    assert scoring["WriteTelemetry"]["Resource"] == outputs["TableArn"]

    # The image build project's role and log group (moto's CloudFormation skips the CodeBuild project
    # itself: the tests above check it on the template)
    builder = iam.get_role(RoleName="nimbus-dev-images-build")["Role"]
    assert builder["Arn"] == outputs["ImageBuildRoleArn"]
    (trust,) = builder["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "codebuild.amazonaws.com"}
    groups = boto3.client("logs", region_name="us-east-1").describe_log_groups(
        logGroupNamePrefix="/aws/codebuild/")["logGroups"]
    assert [g["logGroupName"] for g in groups] == [names.image_build_log_group("dev")]

    # The run token key, behind the alias the dev stage names; the runner's role may decrypt with it and the
    # API's policy encrypt. (moto 5.2.5 keeps a CloudFormation key policy as the template's dict, on which
    # describe_key and get_key_policy fail: the key policy is asserted on the template above.)
    kms = boto3.client("kms", region_name="us-east-1")
    assert outputs["RunTokenKeyAlias"] == names.run_token_key_alias("dev")
    (alias,) = [a for a in kms.list_aliases()["Aliases"] if a["AliasName"] == names.run_token_key_alias("dev")]
    assert outputs["RunTokenKeyArn"] == f"arn:aws:kms:us-east-1:123456789012:key/{alias['TargetKeyId']}"
    runner = iam.get_role_policy(RoleName=names.batch_role_name("dev", "job"), PolicyName="runner")["PolicyDocument"]
    if isinstance(runner, str):
        runner = ast.literal_eval(runner)
    assert _statements_by_sid(runner)["OpenRunTokens"]["Resource"] == outputs["RunTokenKeyArn"]
    assert statements["SealRunTokens"]["Resource"] == outputs["RunTokenKeyArn"]
    assert statements["SealRunTokens"]["Condition"]["StringEquals"] == {"kms:RequestAlias": "alias/nimbus-dev-run-tokens"}


# --- chalice package + the merged template ----------------------------------------------------


def test_chalice_package_merges_the_template_and_lints(tmp_path):
    assert (ROOT / "app.py").exists(), "chalice package needs app.py at the repository root"
    out = tmp_path / "out"
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1")
    # The first run in a clone downloads requirements.txt's wheels (about 15 s); Chalice then reuses
    # .chalice/deployments/ and later runs take about a second.
    packaged = subprocess.run(
        [str(BIN / "python"), "infra/package.py", "--stage", "dev", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert packaged.returncode == 0, packaged.stdout + packaged.stderr
    # The API builds scoring functions from the nimbus sources it carries
    with zipfile.ZipFile(out / "deployment.zip") as bundle:
        names = set(bundle.namelist())
        assert {"nimbus/model_path.py", "chalicelib/scoring/lambda_handler.py"} <= names
        # chalice leaves out, with a mere warning, a dependency it finds no Lambda-compatible wheel for
        assert {"pyarrow/__init__.py", "pydantic/__init__.py", "cryptography/__init__.py"} <= names
        unzipped = sum(entry.file_size for entry in bundle.infolist())
    assert unzipped < 250 * 1024 ** 2, f"the bundle unzips to {unzipped / 2**20:.0f} MiB: Lambda takes at most 250 MiB"
    assert not (ROOT / "vendor").exists()
    sam = json.loads((out / "sam.json").read_text(encoding="utf-8"))
    assert sam["Transform"] == "AWS::Serverless-2016-10-31"
    assert set(_template()["Resources"]) <= set(sam["Resources"])
    assert sam["Parameters"] == _template()["Parameters"]
    # Batch's job state changes reach a function of their own through the rule Chalice declares
    events = sam["Resources"]["BatchJobStateChange"]["Properties"]["Events"]
    assert events["BatchJobStateChangeEvent"] == {"Type": "CloudWatchEvent", "Properties": {"Pattern": {
        "source": ["aws.batch"], "detail-type": ["Batch Job State Change"]}}}
    sweep = sam["Resources"]["BatchSweep"]["Properties"]["Events"]["BatchSweepEvent"]
    assert sweep == {"Type": "Schedule", "Properties": {"Schedule": "rate(5 minutes)"}}
    function = sam["Resources"]["APIHandler"]["Properties"]
    assert function["MemorySize"] == 512 and function["Timeout"] == 30
    assert function["Environment"]["Variables"]["NIMBUS_TABLE"] == "nimbus-dev"
    # Every function runs with Chalice's role, whose declaration is the template's: the API policy attached,
    # Chalice's generated inline policy gone
    functions = {name: r["Properties"] for name, r in sam["Resources"].items()
                 if r["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {"APIHandler", "BatchJobStateChange", "BatchSweep"}
    assert all(f["Role"] == {"Fn::GetAtt": [api_policy.CHALICE_ROLE, "Arn"]} and "Policies" not in f
               for f in functions.values())
    role = sam["Resources"][api_policy.CHALICE_ROLE]
    assert role == _template()["Resources"][api_policy.CHALICE_ROLE]
    assert role["Properties"]["Policies"] == [] and "ManagedPolicyArns" not in role["Properties"]
    assert sam["Resources"]["ApiFunctionPolicy"] == _template()["Resources"]["ApiFunctionPolicy"]
    assert sam["Resources"]["ApiFunctionPolicy"]["Properties"]["Roles"] == [{"Ref": api_policy.CHALICE_ROLE}]
    # and no other role of the merged template is assumed by Lambda but the scoring functions' own
    lambda_roles = [name for name, r in sam["Resources"].items() if r["Type"] == "AWS::IAM::Role"
                    and any(s["Principal"] == {"Service": "lambda.amazonaws.com"}
                            for s in r["Properties"]["AssumeRolePolicyDocument"]["Statement"])]
    assert sorted(lambda_roles) == sorted([api_policy.CHALICE_ROLE, "ScoringFunctionRole"])

    result = _cfn_lint(out / "sam.json")
    assert result.returncode == 0, result.stdout + result.stderr
