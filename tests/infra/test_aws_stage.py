"""The deployed shape: the Chalice app on its `dev` stage, configured only by .chalice/config.json,
serving from DynamoDB and S3 (moto) the way a Lambda function would."""
from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from chalice.test import Client

from chalicelib import settings as settings_module
from chalicelib.api import service_locator
from chalicelib.bootstrap import create_first_admin
from chalicelib.store import schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dev_stage(aws_env, monkeypatch):
    stage = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]["environment_variables"]
    boto3.client("dynamodb").create_table(**schema.dynamodb_table_definition(stage["NIMBUS_TABLE"]))
    boto3.client("s3").create_bucket(Bucket=stage["NIMBUS_BUCKET"])
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    service_locator.use(None)  # build the services from the stage's environment, as a cold start does
    settings_module.current.cache_clear()
    from chalicelib.api.app import app

    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        yield client, stage
    service_locator.use(None)
    settings_module.current.cache_clear()


def test_the_dev_stage_serves_from_dynamodb_and_s3(dev_stage):
    client, stage = dev_stage
    assert client.http.get("/v1/whoami").status_code == 401

    # Given the first admin, created once for the deployment
    token = create_first_admin(settings_module.Settings.from_env({**os.environ, **stage}))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    # When a workspace and a run are created through the API
    assert client.http.post("/v1/workspaces", headers=headers, body=json.dumps({"name": "cloud"})).status_code == 201
    run = json.loads(client.http.post("/v1/workspaces/cloud/runs", headers=headers,
                                      body=json.dumps({"experiment": "e", "status": "Running"})).body)
    upload = json.loads(client.http.post(f"/v1/workspaces/cloud/runs/{run['id']}/outputs/uploads", headers=headers,
                                         body=json.dumps({"paths": ["model.pkl"]})).body)

    # Then they live in the stage's table and the presigned URL points at the stage's bucket
    assert service_locator.services().ctx.settings.backend == "aws"
    item = boto3.client("dynamodb").get_item(TableName=stage["NIMBUS_TABLE"], Key={"pk": {"S": f"RUN#{run['id']}"},
                                                                                  "sk": {"S": "RUN"}})
    assert item["Item"]["experiment"]["S"] == "e"
    assert stage["NIMBUS_BUCKET"] in upload["uploads"][0]["url"]
    assert "X-Amz-Signature" in upload["uploads"][0]["url"]
