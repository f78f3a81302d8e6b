"""The AWS Lambda handler of a deployment's scoring function: `chalicelib.scoring.lambda_handler.handler`.

Events: API Gateway REST (v1), HTTP API and function URLs (v2), and the same shape when the API
invokes the function itself ({"body", "isBase64Encoded", "headers"}). Keys are checked in front of
the function (the API's scoring route), never here. Answers are {"statusCode", "headers", "body",
"isBase64Encoded": false}.

Environment:
    NIMBUS_ENTRY_SCRIPT          the entry script, relative to the source folder
    NIMBUS_SOURCE_DIR            the source folder (default: `source/` beside the package root)
    NIMBUS_SOURCE_MANIFEST       a key in NIMBUS_BUCKET holding {"files": [[path, key, size], ...]}: the
                                 source folder's files (keys in NIMBUS_BUCKET), downloaded to
                                 NIMBUS_SOURCE_DIR on cold start (container image functions, whose
                                 image is the environment's and holds no deployment's source)
    NIMBUS_MODEL_SOURCES         JSON [{"name", "version", "asset_path", "bucket", "prefix",
                                 "files": [[path, size], ...]}]: downloaded from S3 on cold start
                                 (unset: NIMBUS_MODEL_DIR is used as it is, models.json included)
    NIMBUS_MODEL_DIR             where the models go (default /tmp/nimbus-models)
    NIMBUS_TIMEOUT_S             run()'s timeout (default 60)
    NIMBUS_ENDPOINT_WORKSPACE, NIMBUS_ENDPOINT, NIMBUS_DEPLOYMENT, NIMBUS_REVISION   what this is
    NIMBUS_CAPTURE_RATE, NIMBUS_CAPTURE_PREFIX                                        request capture
    NIMBUS_BACKEND, NIMBUS_TABLE, NIMBUS_BUCKET (chalicelib.settings)                 telemetry, capture
    POWERTOOLS_METRICS_DISABLED  no CloudWatch metrics (Requests, Errors, Latency in "Nimbus/Scoring")

The cold start (first invocation) downloads the source folder (image functions) and the models, and calls init(); when that fails, every
request answers 503 DeploymentFailed. A run() past its timeout answers 504; since a Python thread
cannot be stopped, the next invocation loads a fresh runtime (entry script re-imported, init() again)
when the old run() still has not returned.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from chalicelib.scoring.capture import Capture
from chalicelib.scoring.runtime import (
    JSON, MAX_BODY, ScoreAnswer, ScoringInitError, ScoringRuntime, error_answer, payload_too_large,
)
from chalicelib.scoring.telemetry_recorder import TelemetryRecorder

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = "/tmp/nimbus-models"


# --- cold start: source folder and models -----------------------------------------------------------
def download_source(bucket: str, manifest_key: str, source_dir: Path, s3=None) -> None:
    """Fetch the source files the manifest lists to `source_dir`; files already there with the right size
    (a sandbox reusing /tmp, so the same function version) are not fetched again."""
    s3 = s3 or _s3_client()
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    jobs = []
    for path, key, size in manifest["files"]:
        target = _inside(source_dir, path, "source file")
        if not (target.is_file() and target.stat().st_size == int(size)):
            jobs.append((bucket, key, target, int(size)))
    source_dir.mkdir(parents=True, exist_ok=True)
    _download_all(s3, jobs)


def download_models(sources: list[dict], model_dir: Path, s3=None) -> None:
    """Fetch each model version's files to `<model_dir>/<name>/<version>/` and write models.json.

    Files already there with the right size (a sandbox reusing /tmp) are not fetched again.
    """
    index: dict[str, dict[str, str]] = {}
    jobs = []
    for source in sources:
        base = model_dir / str(source["name"]) / str(source["version"])
        for path, size in source.get("files") or []:
            target = _inside(base, path, "model file")
            if not (target.is_file() and target.stat().st_size == int(size)):
                jobs.append((source["bucket"], source.get("prefix", "") + path, target, int(size)))
        index.setdefault(str(source["name"]), {})[str(source["version"])] = source["asset_path"]
    if jobs:
        _download_all(s3 or _s3_client(), jobs)
    model_dir.mkdir(parents=True, exist_ok=True)
    temp = model_dir / f".models.json.{os.getpid()}"
    temp.write_text(json.dumps(index))
    os.replace(temp, model_dir / "models.json")


def _download_all(s3, jobs: list[tuple[str, str, Path, int]]) -> None:
    """(bucket, key, target, size) jobs, in parallel when there are several."""
    if len(jobs) == 1:
        _download(s3, *jobs[0])
    elif jobs:
        from concurrent.futures import ThreadPoolExecutor  # here: only a deployment of many files needs it

        with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
            list(pool.map(lambda job: _download(s3, *job), jobs))


def _download(s3, bucket: str, key: str, target: Path, size: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.part")
    s3.download_file(bucket, key, str(temp))
    got = temp.stat().st_size
    if got != size:
        temp.unlink(missing_ok=True)
        raise OSError(f"s3://{bucket}/{key} has {got} bytes, the deployment lists {size}")
    os.replace(temp, target)


def _s3_client():
    from chalicelib.aws_clients import make_client  # here: not part of the cold start
    from chalicelib.settings import Settings

    return make_client("s3", Settings.from_env())


def _inside(folder: Path, relative: str, what: str) -> Path:
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ValueError(f"{what} {relative!r} leaves its folder")
    return target


# --- the sandbox -----------------------------------------------------------------------------------
class Sandbox:
    """What one Lambda execution environment keeps between invocations."""

    def __init__(self, env: dict[str, str] | None = None):
        env = dict(os.environ if env is None else env)
        self.env = env
        self.workspace = env.get("NIMBUS_ENDPOINT_WORKSPACE", "")
        self.endpoint = env.get("NIMBUS_ENDPOINT", "")
        self.deployment = env.get("NIMBUS_DEPLOYMENT", "")
        self.revision = env.get("NIMBUS_REVISION")
        self.model_dir = Path(env.get("NIMBUS_MODEL_DIR") or DEFAULT_MODEL_DIR)
        self.source_dir = Path(env.get("NIMBUS_SOURCE_DIR") or PACKAGE_ROOT / "source")
        self.telemetry = TelemetryRecorder(self.workspace, self.endpoint)
        self.capture = Capture(self.deployment, env.get("NIMBUS_CAPTURE_PREFIX", ""),
                               float(env.get("NIMBUS_CAPTURE_RATE") or 0))
        self.runtime: ScoringRuntime | None = None
        self.error: str | None = None
        self.cold_start_s: float | None = None
        self._table = None
        self._metrics = _build_metrics(self.endpoint, self.deployment)
        self.headers = {"Content-Type": JSON, "X-Nimbus-Deployment": self.deployment}

    def start(self) -> None:
        started = time.perf_counter()
        try:
            entry_script = self.env.get("NIMBUS_ENTRY_SCRIPT")
            if not entry_script:
                raise ScoringInitError("NIMBUS_ENTRY_SCRIPT is not set: the function does not name its entry script")
            manifest = self.env.get("NIMBUS_SOURCE_MANIFEST")
            if manifest:
                try:
                    download_source(self.env.get("NIMBUS_BUCKET", ""), manifest, self.source_dir)
                except Exception as err:  # noqa: BLE001 - any failure here fails the deployment
                    raise ScoringInitError(f"source download failed: {type(err).__name__}: {err}",
                                           traceback.format_exc()) from err
            sources = self.env.get("NIMBUS_MODEL_SOURCES")
            if sources:
                try:
                    download_models(json.loads(sources), self.model_dir)
                except Exception as err:  # noqa: BLE001 - any failure here fails the deployment
                    raise ScoringInitError(f"model download failed: {type(err).__name__}: {err}",
                                           traceback.format_exc()) from err
            self.runtime = self._new_runtime(entry_script)
        except ScoringInitError as err:
            self.error = err.message
            sys.stderr.write(err.traceback)
            print(f"deployment failed to start: {err.message}", file=sys.stderr, flush=True)
        self.cold_start_s = round(time.perf_counter() - started, 3)

    def _new_runtime(self, entry_script: str) -> ScoringRuntime:
        runtime = ScoringRuntime(self.source_dir, entry_script, self.model_dir,
                                 float(self.env.get("NIMBUS_TIMEOUT_S") or 60))
        runtime.load()
        return runtime

    def ensure_usable(self) -> None:
        """After a timeout: a runtime whose run() still has not returned is replaced."""
        if self.runtime is not None and self.runtime.overrun:
            print("the previous run() is still running past its timeout: loading a fresh runtime",
                  file=sys.stderr, flush=True)
            self.runtime = None
            self.start()

    def score(self, body: bytes, content_type: str | None) -> ScoreAnswer:
        if self.runtime is None:
            return error_answer(503, "DeploymentFailed", self.error or "the deployment is not initialised")
        return self.runtime.score(body, content_type)

    def health(self) -> ScoreAnswer:
        if self.runtime is None:
            return error_answer(503, "DeploymentFailed", self.error or "the deployment is not initialised")
        return ScoreAnswer(200, orjson.dumps({"status": "Healthy", "deployment": self.deployment,
                                              "revision": self.revision}))

    def after(self, answer: ScoreAnswer, body: bytes, latency_ms: float) -> None:
        """Per invocation: telemetry to the table, metrics to CloudWatch, captured samples to S3. A
        frozen sandbox runs no background thread, so everything is written before returning."""
        self.telemetry.record(self.deployment, answer.status, latency_ms)
        try:
            if self._table is None:
                from chalicelib.settings import Settings  # here: not part of the cold start
                from chalicelib.store.factory import build_table

                self._table = build_table(Settings.from_env())
            self.telemetry.flush(self._table)
        except Exception as err:  # noqa: BLE001 - kept for the next invocation; the answer stands
            print(f"telemetry flush failed (will retry): {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        if self._metrics is not None:
            _emit_metrics(self._metrics, answer, latency_ms)
        if self.capture.enabled:
            self.capture.offer(answer.status, body, answer.body)
            self.capture.drain()


def _build_metrics(endpoint: str, deployment: str):
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled  # here: not part of the cold start

    if is_metrics_disabled():
        return None  # disabled metrics would still accumulate and print every 100 values
    from aws_lambda_powertools import Metrics  # here: not part of the cold start

    metrics = Metrics(namespace="Nimbus/Scoring")
    metrics.set_default_dimensions(endpoint=endpoint or "unknown", deployment=deployment or "unknown")
    return metrics


def _emit_metrics(metrics, answer: ScoreAnswer, latency_ms: float) -> None:
    from aws_lambda_powertools.metrics import MetricUnit  # here: not part of the cold start

    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1 if answer.is_error else 0)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=latency_ms)
    metrics.flush_metrics()


_SANDBOX: Sandbox | None = None


def sandbox() -> Sandbox:
    """This execution environment's sandbox, started on the first invocation (the cold start)."""
    global _SANDBOX
    if _SANDBOX is None:
        started = Sandbox()
        started.start()
        _SANDBOX = started
    return _SANDBOX


def reset_sandbox() -> None:
    """Forget the sandbox, so the next invocation starts cold (tests, benchmarks)."""
    global _SANDBOX
    _SANDBOX = None


# --- events ----------------------------------------------------------------------------------------
def parse_event(event: dict) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path, lower-cased headers, body bytes) of a v1, v2 or direct event; raises ValueError
    when a base64 body does not decode."""
    http = (event.get("requestContext") or {}).get("http") or {}
    method = (http.get("method") or event.get("httpMethod") or "POST").upper()
    path = event.get("rawPath") or http.get("path") or event.get("path") or "/score"
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items() if v is not None}
    for name, values in (event.get("multiValueHeaders") or {}).items():
        if values and name.lower() not in headers:
            headers[name.lower()] = ", ".join(str(v) for v in values)
    body = event.get("body")
    if body is None:
        data = b""
    elif event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError("the request body is marked base64 but does not decode") from err
    else:
        data = body.encode("utf-8") if isinstance(body, str) else orjson.dumps(body)
    return method, path, headers, data


def handler(event: dict, context: Any = None) -> dict:
    started = time.perf_counter()
    box = sandbox()
    box.ensure_usable()
    body = b""
    try:
        method, path, headers, body = parse_event(event if isinstance(event, dict) else {})
    except ValueError as err:
        answer = error_answer(400, "Invalid", str(err), field="body")
    else:
        if method == "GET" and path.rstrip("/").endswith("/health"):
            return _response(box, box.health())  # health checks are not scoring requests
        if len(body) > MAX_BODY:
            answer = payload_too_large(len(body))
        else:
            answer = box.score(body, headers.get("content-type"))
    latency_ms = (time.perf_counter() - started) * 1000.0
    box.after(answer, body, latency_ms)
    return _response(box, answer)


def _response(box: Sandbox, answer: ScoreAnswer) -> dict:
    headers = box.headers if answer.content_type == JSON else {**box.headers, "Content-Type": answer.content_type}
    return {"statusCode": answer.status, "headers": dict(headers), "body": answer.body.decode("utf-8"),
            "isBase64Encoded": False}
