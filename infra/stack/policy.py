"""IAM documents (awacs) and the ARN patterns their statements name.

Every statement of the stack is an Allow with a Sid, actions and resources, so one helper makes them
all; the trust policy of a service role and the ARNs in the stack's account and region have one
helper each.
"""
from __future__ import annotations

from typing import Iterable

import awacs.logs
import awacs.sts
from awacs.aws import Action, Allow, Condition, ConditionElement, PolicyDocument, Principal, Statement
from troposphere import AWSObject, GetAtt, Sub, iam

VERSION = "2012-10-17"
# awacs types Resource as a list: a literal resource must be one (an Fn::Sub or Fn::GetAtt may stand alone).
ANY_RESOURCE = ["*"]
PARTITION = "arn:${AWS::Partition}"
LAMBDA_SERVICE = "lambda.amazonaws.com"
# What a Lambda function needs to write its logs: it creates its log group on first use.
FUNCTION_LOGS = [awacs.logs.CreateLogGroup, awacs.logs.CreateLogStream, awacs.logs.PutLogEvents]
# What a container (Batch job, CodeBuild build) needs: its log group is made by the stack or by the service.
CONTAINER_LOGS = [awacs.logs.CreateLogStream, awacs.logs.PutLogEvents]


def allow(sid: str, actions: Iterable[Action], resource, *conditions: ConditionElement) -> Statement:
    """`resource`: one ARN (Sub, GetAtt) or a list of them; `conditions` are ANDed, one per operator."""
    statement = Statement(Sid=sid, Effect=Allow, Action=list(actions), Resource=resource)
    if conditions:
        statement.Condition = Condition(list(conditions))
    return statement


def document(*statements: Statement) -> PolicyDocument:
    return PolicyDocument(Version=VERSION, Statement=list(statements))


def inline(name: str, *statements: Statement) -> iam.Policy:
    """An inline policy of a role."""
    return iam.Policy(PolicyName=name, PolicyDocument=document(*statements))


def trust(service: str) -> PolicyDocument:
    """Only `service` may assume the role."""
    return PolicyDocument(Version=VERSION, Statement=[
        Statement(Effect=Allow, Principal=Principal("Service", service), Action=[awacs.sts.AssumeRole])])


def service_role(title: str, name: str, description: str, service: str, **properties) -> iam.Role:
    """A role assumed by an AWS service; `name` and `description` are Fn::Sub texts (they hold ${Stage})."""
    return iam.Role(title, RoleName=Sub(name), Description=Sub(description),
                    AssumeRolePolicyDocument=trust(service), **properties)


def arn(service: str, resource: str) -> Sub:
    """An ARN of the stack's partition, region and account."""
    return Sub(f"{PARTITION}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}")


def account_arn(service: str, resource: str) -> Sub:
    """An ARN of a global service (IAM): no region."""
    return Sub(f"{PARTITION}:{service}::${{AWS::AccountId}}:{resource}")


def aws_managed_policy(name: str) -> Sub:
    return Sub(f"{PARTITION}:iam::aws:policy/service-role/{name}")


def log_groups(name: str, streams: str = "log-stream:*") -> list[Sub]:
    """A log group (pattern) and its streams: creating a stream is on the group, writing on the stream."""
    return [arn("logs", f"log-group:{name}"), arn("logs", f"log-group:{name}:{streams}")]


def arn_of(resource: AWSObject) -> GetAtt:
    return GetAtt(resource, "Arn")


def objects(bucket: AWSObject, pattern: str) -> Sub:
    """The keys of `bucket` that match `pattern`."""
    return Sub(f"${{{bucket.title}.Arn}}/{pattern}")
