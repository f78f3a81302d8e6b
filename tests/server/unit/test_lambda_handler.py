"""The Lambda scoring handler, called in-process with real API Gateway v1 and v2 events (moto's Lambda
never runs code): models come from S3, telemetry lands in the DynamoDB table, both under moto."""
from __future__ import annotations

import base64
import json

import boto3
import pytest

from chalicelib.scoring import lambda_handler
from chalicelib.scoring.runtime import MAX_BODY
from chalicelib.domain.context import Context
from chalicelib.services.endpoint_telemetry import EndpointTelemetry
from chalicelib.settings import Settings
from chalicelib.store import schema
from chalicelib.store.factory import build_blobs, build_table
from tests.server.unit.scoring_helpers import SETOSA, VIRGINICA, iris_model_bytes, write_source

BUCKET, TABLE = "nimbus-scoring-test", "nimbus-scoring-test"


def v1_event(body: str, *, encoded: bool = False, method: str = "POST", path: str = "/score") -> dict:
    """API Gateway REST API (payload 1.0)."""
    return {"resource": path, "path": path, "httpMethod": method,
            "headers": {"Content-Type": "application/json", "Host": "abc.execute-api.us-east-1.amazonaws.com"},
            "multiValueHeaders": {"Content-Type": ["application/json"]}, "queryStringParameters": None,
            "pathParameters": None, "stageVariables": None,
            "requestContext": {"resourcePath": path, "httpMethod": method, "path": f"/prod{path}", "stage": "prod",
                               "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"},
            "body": body, "isBase64Encoded": encoded}


def v2_event(body: str, *, encoded: bool = False, method: str = "POST", path: str = "/score") -> dict:
    """HTTP API or function URL (payload 2.0)."""
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "application/json", "content-length": str(len(body))},
            "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "203.0.113.1", "userAgent": "curl/8"},
                               "requestId": "JKJaXmPLvHcESHA=", "stage": "$default", "timeEpoch": 1_700_000_000_000},
            "body": body, "isBase64Encoded": encoded}


@pytest.fixture
def function_env(aws_env, tmp_path, monkeypatch):
    """A deployed function's environment: model files in S3, the table, the source folder."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="ws/models/v/iris/3/model.pkl", Body=iris_model_bytes())
    boto3.client("dynamodb").create_table(**schema.dynamodb_table_definition(TABLE))
    sources = [{"name": "iris", "version": 3, "asset_path": "model.pkl", "bucket": BUCKET,
                "prefix": "ws/models/v/iris/3/", "files": [["model.pkl", len(iris_model_bytes())]]}]
    env = {"NIMBUS_BACKEND": "aws", "NIMBUS_TABLE": TABLE, "NIMBUS_BUCKET": BUCKET,
           "NIMBUS_ENDPOINT_WORKSPACE": "ws", "NIMBUS_ENDPOINT": "ep", "NIMBUS_DEPLOYMENT": "blue",
           "NIMBUS_REVISION": "3", "NIMBUS_ENTRY_SCRIPT": "score.py",
           "NIMBUS_SOURCE_DIR": str(write_source(tmp_path / "source")), "NIMBUS_MODEL_DIR": str(tmp_path / "models"),
           "NIMBUS_TIMEOUT_S": "5", "NIMBUS_MODEL_SOURCES": json.dumps(sources)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lambda_handler.reset_sandbox()
    yield tmp_path
    lambda_handler.reset_sandbox()


def summary() -> dict:
    settings = Settings.from_env()
    return EndpointTelemetry(Context(build_table(settings), build_blobs(settings), settings)).summary("ws", "ep", 60)


def test_v1_event_scores_with_the_model_from_s3(function_env):
    response = lambda_handler.handler(v1_event(json.dumps({"data": [SETOSA, VIRGINICA]})), None)
    assert response == {"statusCode": 200, "headers": {"Content-Type": "application/json",
                                                       "X-Nimbus-Deployment": "blue"},
                        "body": "[0,2]", "isBase64Encoded": False}
    models = function_env / "models"
    assert (models / "iris" / "3" / "model.pkl").read_bytes() == iris_model_bytes()
    assert json.loads((models / "models.json").read_text()) == {"iris": {"3": "model.pkl"}}
    assert lambda_handler.sandbox().cold_start_s > 0
    counts = summary()
    assert counts["requests"] == 1 and counts["errors"] == 0 and counts["deployments"]["blue"]["requests"] == 1


def test_v2_event_with_a_base64_body(function_env):
    body = base64.b64encode(json.dumps({"data": [VIRGINICA]}).encode()).decode()
    response = lambda_handler.handler(v2_event(body, encoded=True), None)
    assert response["statusCode"] == 200 and json.loads(response["body"]) == [2]
    response = lambda_handler.handler(v2_event("not base64!", encoded=True), None)
    assert response["statusCode"] == 400 and json.loads(response["body"])["field"] == "body"


def test_direct_invocation_by_the_api(function_env):
    event = {"body": json.dumps({"data": [SETOSA]}), "isBase64Encoded": False,
             "headers": {"content-type": "application/json"}}
    assert json.loads(lambda_handler.handler(event, None)["body"]) == [0]


def test_answer_table_through_the_handler(function_env):
    failed = lambda_handler.handler(v2_event(json.dumps({"action": "fail"})), None)
    assert failed["statusCode"] == 500
    assert json.loads(failed["body"]) == {"code": "ScoringError", "message": "ValueError: no such flower"}
    too_large = base64.b64encode(b" " * (MAX_BODY + 1)).decode()
    answer = lambda_handler.handler(v1_event(too_large, encoded=True), None)
    assert answer["statusCode"] == 413 and json.loads(answer["body"])["code"] == "PayloadTooLarge"
    health = lambda_handler.handler(v2_event("", method="GET", path="/health"), None)
    assert json.loads(health["body"]) == {"status": "Healthy", "deployment": "blue", "revision": "3"}
    counts = summary()  # health checks are not requests; 413 is the client's mistake, 500 an error
    assert counts["requests"] == 2 and counts["errors"] == 1


def test_timeout_then_a_fresh_runtime(function_env, monkeypatch):
    monkeypatch.setenv("NIMBUS_TIMEOUT_S", "0.3")
    slow = lambda_handler.handler(v2_event(json.dumps({"action": "sleep", "seconds": 1.0})), None)
    assert slow["statusCode"] == 504 and json.loads(slow["body"])["code"] == "ScoringTimeout"
    stuck = lambda_handler.sandbox().runtime
    assert stuck.overrun
    answer = lambda_handler.handler(v2_event(json.dumps({"data": [SETOSA]})), None)
    assert answer["statusCode"] == 200 and lambda_handler.sandbox().runtime is not stuck


def test_failed_init_answers_503_to_every_request(function_env, capfd):
    script = "def init():\n    raise OSError('no GPU here')\n\ndef run(raw_data):\n    pass\n"
    write_source(function_env / "source", script)
    for _ in range(2):
        response = lambda_handler.handler(v1_event("{}"), None)
        assert response["statusCode"] == 503
        assert json.loads(response["body"]) == {"code": "DeploymentFailed",
                                                "message": "OSError: no GPU here (in init(), at score.py line 2)"}
    assert "Traceback" in capfd.readouterr().err
    assert summary()["errors"] == 2


def test_missing_model_file_fails_the_deployment(function_env, monkeypatch):
    sources = json.loads(lambda_handler.os.environ["NIMBUS_MODEL_SOURCES"])
    sources[0]["files"] = [["missing.pkl", 10]]
    monkeypatch.setenv("NIMBUS_MODEL_SOURCES", json.dumps(sources))
    response = lambda_handler.handler(v2_event("{}"), None)
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["message"].startswith("model download failed: ")


def test_metrics_are_emitted_when_enabled(function_env, monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    lambda_handler.handler(v2_event(json.dumps({"data": [SETOSA]})), None)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = next(line for line in lines if "_aws" in line)
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Nimbus/Scoring"
    assert {"endpoint", "deployment"} <= set(directive["Dimensions"][0])
    assert {m["Name"] for m in directive["Metrics"]} == {"Requests", "Errors", "Latency"}
    assert emf["endpoint"] == "ep" and emf["deployment"] == "blue"
    assert emf["Requests"] == [1.0] and emf["Errors"] == [0.0] and emf["Latency"][0] > 0


# --- a container image function: the source folder comes from the bucket too ----------------------
@pytest.fixture
def image_function_env(function_env, monkeypatch):
    """As an image function runs: its image holds no source, the manifest in the bucket lists it."""
    from tests.server.unit.scoring_helpers import ENTRY_SCRIPT

    s3 = boto3.client("s3")
    files = {"score.py": ENTRY_SCRIPT.encode(), "data/labels.json": b'["setosa", "versicolor", "virginica"]'}
    listed = []
    for index, (path, data) in enumerate(sorted(files.items())):
        key = f"workspaces/ws/snapshots/content/{index:02d}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        listed.append([path, key, len(data)])
    s3.put_object(Bucket=BUCKET, Key="lambda-sources/fn/blue/3.json", Body=json.dumps({"files": listed}))
    monkeypatch.setenv("NIMBUS_SOURCE_MANIFEST", "lambda-sources/fn/blue/3.json")
    monkeypatch.setenv("NIMBUS_SOURCE_DIR", str(function_env / "tmp-source"))  # nothing there yet
    return function_env


def test_an_image_function_fetches_its_source_then_scores(image_function_env):
    response = lambda_handler.handler(v2_event(json.dumps({"data": [SETOSA, VIRGINICA]})), None)
    assert response["statusCode"] == 200 and response["body"] == "[0,2]"
    source = image_function_env / "tmp-source"
    assert json.loads((source / "data" / "labels.json").read_text())[2] == "virginica"
    assert (source / "score.py").read_text().startswith("\nimport json")
    assert (image_function_env / "models" / "iris" / "3" / "model.pkl").read_bytes() == iris_model_bytes()
    assert summary()["requests"] == 1


def test_an_image_function_whose_source_cannot_be_fetched_fails_the_deployment(image_function_env, monkeypatch):
    manifest = {"files": [["score.py", "workspaces/ws/snapshots/content/gone", 10]]}
    boto3.client("s3").put_object(Bucket=BUCKET, Key="lambda-sources/fn/blue/4.json", Body=json.dumps(manifest))
    monkeypatch.setenv("NIMBUS_SOURCE_MANIFEST", "lambda-sources/fn/blue/4.json")
    response = lambda_handler.handler(v2_event("{}"), None)
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["message"].startswith("source download failed: ")
    # a manifest path leaving the folder is refused, not written
    escaping = {"files": [["../outside.py", "workspaces/ws/snapshots/content/00", 10]]}
    boto3.client("s3").put_object(Bucket=BUCKET, Key="lambda-sources/fn/blue/5.json", Body=json.dumps(escaping))
    with pytest.raises(ValueError, match="leaves its folder"):
        lambda_handler.download_source(BUCKET, "lambda-sources/fn/blue/5.json", image_function_env / "tmp-source",
                                       boto3.client("s3"))
    assert not (image_function_env / "outside.py").exists()
