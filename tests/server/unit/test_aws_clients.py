"""Every boto3 client comes from one factory, whose botocore retries (adaptive, bounded) absorb throttling."""
from __future__ import annotations

import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from chalicelib.aws_clients import MAX_ATTEMPTS, make_client
from chalicelib.settings import Settings

THROTTLED = (b'{"__type": "ThrottlingException", "message": "Rate exceeded"}')


class Throttling:
    """Answers the first `times` requests with a 400 ThrottlingException, as KMS does when it is busy."""

    def __init__(self, times: int):
        self.times, self.sent = times, 0

    def __call__(self, request, **_):
        self.sent += 1
        if self.sent > self.times:
            return None  # the request goes on to moto
        raw = _Raw(THROTTLED)
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, raw)


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


@pytest.fixture
def no_pauses(monkeypatch):
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda seconds: None)


def kms(aws_env, times: int):
    client = make_client("kms", Settings(backend="aws"))
    throttling = Throttling(times)
    client.meta.events.register("before-send.kms.ListKeys", throttling)
    return client, throttling


def test_a_throttled_request_is_retried_by_the_client(aws_env, no_pauses):
    client, throttling = kms(aws_env, times=2)
    assert client.list_keys()["Keys"] == []
    assert throttling.sent == 3


def test_retries_stop_after_a_bounded_number_of_attempts(aws_env, no_pauses):
    client, throttling = kms(aws_env, times=100)
    with pytest.raises(ClientError) as raised:
        client.list_keys()
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert throttling.sent == MAX_ATTEMPTS


def test_clients_use_adaptive_retries_and_the_settings_endpoints(aws_env):
    settings = Settings(backend="aws", region="eu-west-1", s3_endpoint="http://127.0.0.1:9000")
    s3 = make_client("s3", settings)
    assert s3.meta.config.retries == {"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS}
    assert s3.meta.endpoint_url == "http://127.0.0.1:9000" and s3.meta.region_name == "eu-west-1"
    assert s3.meta.config.signature_version == "s3v4"
