"""Shared fixtures. `backend` parametrizes a test over both backends: "local" and "aws" (moto)."""
from __future__ import annotations

import os
import tempfile
import threading

import pytest

from chalicelib.settings import Settings
from chalicelib.store import schema
from chalicelib.store.factory import build_blobs, build_table

BACKENDS = ["local", "aws"]


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials and a region, then moto's mock_aws; clients are created only after it starts."""
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    # No container engine here: Lambda functions and Batch jobs are recorded, never run.
    with mock_aws(config={"lambda": {"use_docker": False}, "batch": {"use_docker": False}}):
        yield


@pytest.fixture(autouse=True)
def _atomic_moto_requests(monkeypatch):
    """DynamoDB applies each request atomically; moto's in-memory backend does not serialise concurrent
    requests. One lock around every botocore call restores the real per-request atomicity, so the
    concurrency tests prove our logic rather than moto's races."""
    import botocore.client

    lock = threading.RLock()
    original = botocore.client.BaseClient._make_api_call

    def serialised(self, operation, params):
        with lock:
            return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", serialised)


_REAL_ENVIRON = os.environ


@pytest.fixture(autouse=True)
def _real_environ():
    """Chalice's test client swaps os.environ for a copy during each request; requests sent from several
    threads at once can leave a copy in place, whose changes subprocesses never see. Every test starts
    and ends with the real one."""
    os.environ = _REAL_ENVIRON
    yield
    os.environ = _REAL_ENVIRON


def _second_s3(checks_signatures: bool):
    from tests import s3_compatible as server

    process, store = server.start(checks_signatures)
    try:
        yield store
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def s3_compatible():
    """A second S3 in its own process (tests/s3_compatible.py), for datastores with an endpoint_url."""
    yield from _second_s3(checks_signatures=True)


@pytest.fixture(scope="session")
def s3_transfers():
    """A second S3 like s3_compatible, whose signature checks are off: presigned URLs work on it."""
    yield from _second_s3(checks_signatures=False)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def settings(backend, tmp_path, request) -> Settings:
    if backend == "aws":
        request.getfixturevalue("aws_env")
        import boto3

        settings = Settings(backend="aws", home=tmp_path, table_name="nimbus-test", bucket="nimbus-test")
        boto3.client("dynamodb", region_name=settings.region).create_table(
            **schema.dynamodb_table_definition(settings.table_name)
        )
        boto3.client("s3", region_name=settings.region).create_bucket(Bucket=settings.bucket)
        return settings
    return Settings(backend="local", home=tmp_path, public_url="http://127.0.0.1:9")


@pytest.fixture
def table(settings):
    return build_table(settings)


@pytest.fixture
def blobs(settings):
    return build_blobs(settings)


def pytest_configure(config):
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    # Tests never see the developer's own platform, profile or service settings.
    scratch = tempfile.mkdtemp(prefix="nimbus-tests-")
    os.environ["NIMBUS_HOME"] = os.path.join(scratch, "home")
    os.environ["NIMBUS_CONFIG"] = os.path.join(scratch, "profile.json")
    for name in ("NIMBUS_URL", "NIMBUS_TOKEN", "NIMBUS_WORKSPACE", "NIMBUS_BACKEND"):
        os.environ.pop(name, None)
