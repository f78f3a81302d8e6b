"""An API client over the real Chalice app, with services on the parametrized backend."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from chalice.test import Client

from chalicelib.wiring import build_services
from chalicelib.api import service_locator
from tests.server.api.answer_check import check_answer


@dataclass
class Api:
    client: Client
    token: str

    def call(self, method: str, path: str, body=None, token: str | None = "default", raw: bytes | None = None,
             headers: dict | None = None):
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        response = getattr(self.client.http, method.lower())(path, headers=sent, body=payload)
        data = json.loads(response.body) if response.body else None
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
        if "application/json" in content_type:
            check_answer(method, path, response.status_code, data)  # the OpenAPI document tells the truth
        return response.status_code, data

    def ok(self, method: str, path: str, body=None, token="default", status=(200, 201)):
        code, data = self.call(method, path, body, token)
        assert code in (status if isinstance(status, tuple) else (status,)), (code, data)
        return data


@pytest.fixture
def services(settings):
    built = build_services(settings)
    service_locator.use(built)
    yield built
    service_locator.use(None)


@pytest.fixture
def api(services):
    from chalicelib.api.app import app

    admin_token = services.identity.bootstrap_admin()
    with Client(app) as client:
        yield Api(client, admin_token)


@pytest.fixture
def user_token(services):
    """Make a user and return a function giving their token."""

    def make(name: str) -> str:
        services.identity.create_user(name)
        return services.identity.create_token(name)["token"]

    return make

