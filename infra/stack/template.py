"""The stack: its parameters, its resources (one module each) and its outputs."""
from __future__ import annotations

import json

from troposphere import GetAtt, Output, Parameter, Ref, Template

from . import api_policy, batch, bucket, images, run_tokens, scoring, table
from .names import STAGES

DESCRIPTION = ("Nimbus data plane: the DynamoDB table, the artifact bucket, the API function's policy, the scoring "
               "functions' role, the roles of Batch jobs, the run token key and the environment image builds.")


def _stage() -> Parameter:
    return Parameter("Stage", Type="String", AllowedValues=list(STAGES),
                     Description="Chalice stage this stack belongs to (must match `chalice package --stage`).")


def template() -> Template:
    stack = Template(Description=DESCRIPTION)
    stack.set_version("2010-09-09")
    stack.add_parameter([_stage(), bucket.studio_origin()])
    stack.add_condition(bucket.HAS_STUDIO_ORIGIN, bucket.has_studio_origin())
    nimbus_table = stack.add_resource(table.table())
    artifacts = stack.add_resource(bucket.bucket())
    stack.add_resource(bucket.bucket_policy(artifacts))
    key = stack.add_resource(run_tokens.key())
    key_alias = stack.add_resource(run_tokens.alias(key))
    scoring_role = stack.add_resource(scoring.scoring_role(artifacts, nimbus_table))
    batch_roles = stack.add_resource([batch.job_role(key), batch.execution_role(), batch.instance_role()])
    profile = stack.add_resource(batch.instance_profile(batch_roles[2]))
    runner = stack.add_resource(batch.runner_repository())
    build_logs = stack.add_resource(images.log_group())
    build_role = stack.add_resource(images.build_role(artifacts))
    project = stack.add_resource(images.project(build_role, build_logs))
    api_role = stack.add_resource(api_policy.chalice_role())
    policy = stack.add_resource(api_policy.api_function_policy(api_role, [
        *api_policy.data_statements(nimbus_table, artifacts), *scoring.api_statements(scoring_role),
        *batch.api_statements(batch_roles), *images.api_statements(), run_tokens.seal_statement(key)]))
    stack.add_output([
        Output("TableName", Value=Ref(nimbus_table)),
        Output("TableArn", Value=GetAtt(nimbus_table, "Arn")),
        Output("BucketName", Value=Ref(artifacts)),
        Output("ApiFunctionPolicyArn", Value=Ref(policy)),
        Output("ScoringRoleArn", Value=GetAtt(scoring_role, "Arn")),
        Output("BatchJobRoleArn", Value=GetAtt(batch_roles[0], "Arn")),
        Output("BatchExecutionRoleArn", Value=GetAtt(batch_roles[1], "Arn")),
        Output("BatchInstanceProfileArn", Value=GetAtt(profile, "Arn")),
        Output("RunnerRepositoryName", Value=Ref(runner)),
        Output("ImageBuildRoleArn", Value=GetAtt(build_role, "Arn")),
        Output("ImageBuildProjectName", Value=Ref(project)),
        Output("RunTokenKeyArn", Value=GetAtt(key, "Arn")),
        Output("RunTokenKeyAlias", Value=Ref(key_alias)),
    ])
    return stack


def render() -> str:
    """The exact text of infra/template.json: sorted keys, so the file changes only where the stack does."""
    return json.dumps(template().to_dict(), indent=2, sort_keys=True) + "\n"
