"""The HTTP client: typed errors, and retries only where repeating is safe."""
from __future__ import annotations

import json
import socket

import pytest

from nimbus import client as client_module
from nimbus.client import ApiClient, api_path
from nimbus.exceptions import (
    ConflictError, InternalServerError, InvalidError, NimbusError, NotFoundError, ServiceUnavailableError,
    TooLargeError, error_for_status,
)


def reply(status: int, body: dict | None = None) -> tuple[int, bytes, str]:
    return status, json.dumps(body).encode() if body is not None else b"", ""


@pytest.fixture
def scripted(monkeypatch):
    """An ApiClient whose replies come from a list; returns (client, calls)."""
    monkeypatch.setattr(client_module.time, "sleep", lambda seconds: None)
    client, calls, replies = ApiClient("http://service", "nmb_t"), [], []

    def exchange(method, url, body, headers):
        calls.append((method, url))
        return replies.pop(0)

    monkeypatch.setattr(client, "_exchange", exchange)
    return client, calls, replies


def test_get_is_retried_while_the_service_is_unavailable(scripted):
    client, calls, replies = scripted
    replies += [reply(503, {"code": "Unavailable", "message": "throttled"}), reply(502), reply(200, {"ok": True})]
    assert client.get("/v1/x") == {"ok": True}
    assert len(calls) == 3


def test_post_is_not_retried_unless_asked(scripted):
    client, calls, replies = scripted
    replies += [reply(503, {"code": "Unavailable", "message": "throttled"})]
    with pytest.raises(ServiceUnavailableError, match="throttled"):
        client.post("/v1/x", {})
    assert len(calls) == 1
    replies += [reply(503), reply(201, {"id": "r"})]
    assert client.post("/v1/x", {}, retry=True) == {"id": "r"}


def test_client_errors_are_never_retried(scripted):
    client, calls, replies = scripted
    replies += [reply(409, {"code": "Conflict", "message": "taken", "field": "name"})]
    with pytest.raises(ConflictError) as conflict:
        client.get("/v1/x")
    assert (conflict.value.status, conflict.value.code, conflict.value.message, conflict.value.field) == \
        (409, "Conflict", "taken", "name")
    assert len(calls) == 1


def test_retries_stop_after_the_last_attempt(scripted):
    client, calls, replies = scripted
    replies += [reply(503)] * client.attempts
    with pytest.raises(ServiceUnavailableError):
        client.get("/v1/x")
    assert len(calls) == client.attempts


def test_an_unreachable_service_is_unavailable(monkeypatch):
    monkeypatch.setattr(client_module.time, "sleep", lambda seconds: None)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceUnavailableError, match=f"cannot reach http://127.0.0.1:{port}/v1/whoami"):
        ApiClient(f"http://127.0.0.1:{port}", "nmb_t", attempts=2).get("/v1/whoami")


def test_statuses_map_to_error_types():
    assert isinstance(error_for_status(400, {"message": "bad"}, "x"), InvalidError)
    assert isinstance(error_for_status(404, None, "x"), NotFoundError)
    assert isinstance(error_for_status(413, {}, "x"), TooLargeError)
    internal = error_for_status(500, {"code": "InternalError", "message": "internal error"}, "x")
    assert type(internal) is InternalServerError and internal.status == 500 and str(internal) == "internal error"
    # A code this version does not know goes by the status; an unknown status is a plain NimbusError
    newer = error_for_status(409, {"code": "SomethingNew", "message": "m"}, "x")
    assert type(newer) is ConflictError and newer.code == "SomethingNew"
    unknown = error_for_status(418, "not a dict", "HTTP 418")
    assert type(unknown) is NimbusError and unknown.message == "HTTP 418"


def test_path_segments_are_encoded():
    assert api_path("workspaces", "a/b", "runs") == "/v1/workspaces/a%2Fb/runs"
