"""Shared setup of the Batch tests: a moto account with a network, roles, the table and a run."""
from __future__ import annotations

from dataclasses import dataclass, field

import boto3
from botocore.exceptions import ClientError

from chalicelib.services.container import Services
from chalicelib.domain.context import Context
from chalicelib.settings import Settings
from chalicelib.store import schema
from chalicelib.store.factory import build_blobs, build_table

REGION = "us-east-1"


@dataclass
class Account:
    settings: Settings
    services: Services
    batch: object
    subnet: str
    security_group: str
    admin: object = None
    sleeps: list = field(default_factory=list)

    def network(self, provisioning="EC2") -> dict:
        return {"provisioning": provisioning, "subnets": [self.subnet], "security_group_ids": [self.security_group],
                "max_vcpus": 8}

    def queued_run(self, target: dict, experiment: str = "mnist") -> dict:
        run_config = {"script": "train.py", "compute": target["name"]}
        return self.services.runs.create(self.admin, "team", experiment, status="Queued", submission={
            "snapshot_id": "snap", "run_config": run_config, "compute_target": target["name"]})


def make_account(table_name: str = "nimbus-test", **settings) -> Account:
    """Call inside aws_env."""
    ec2, iam = boto3.client("ec2", region_name=REGION), boto3.client("iam", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="batch", Description="batch", VpcId=vpc)["GroupId"]
    iam.create_role(RoleName="instance", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="instance")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="instance", RoleName="instance")
    for name in ("job", "execution", "service"):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    values = dict(backend="aws", table_name=table_name, bucket=table_name, region=REGION,
                  api_url="https://api.example/api", runner_image="registry.example/nimbus-runner:1",
                  batch_job_role_arn="job", batch_execution_role_arn="execution", batch_instance_role_arn=profile,
                  # Real Batch falls back to its service-linked role; moto 5.2.5 insists on a service role.
                  batch_service_role_arn="service")
    values.update(settings)
    config = Settings(**values)
    boto3.client("dynamodb", region_name=REGION).create_table(**schema.dynamodb_table_definition(table_name))
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=table_name)
    services = Services.over(Context(build_table(config), build_blobs(config), config))
    token = services.identity.bootstrap_admin()
    admin = services.identity.authenticate(f"Bearer {token}")
    services.workspaces.create(admin, "team")
    return Account(config, services, boto3.client("batch", region_name=REGION), subnet, group, admin)


def throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Too Many Requests"},
                        "ResponseMetadata": {"HTTPStatusCode": 429}}, operation)
