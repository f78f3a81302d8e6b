"""One table of error codes (nimbus/error_codes.py) for the server and the SDK.

Each code the API answers goes through the API's error mapping (chalicelib/api/routing.py) with its
status, and the SDK's client raises the exception keyed by it; no error of the server has a code or a
status of its own.
"""
from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest
from chalice import Blueprint
from chalice.test import Client

import chalicelib
from chalicelib import errors
from chalicelib.api.application import NimbusChalice
from chalicelib.api.routing import api_route, framework_errors_middleware
from nimbus import client as client_module
from nimbus import error_codes as codes
from nimbus import exceptions
from nimbus.client import ApiClient

CHALICELIB = Path(chalicelib.__file__).parent


@pytest.fixture(scope="module")
def http():
    """An app wired as the API is (routes through `endpoint`, the framework-errors middleware) whose
    one route raises the server's error for the code in its path."""
    bp = Blueprint(__name__)
    by_code = {cls.code: cls for cls in vars(errors).values()
               if inspect.isclass(cls) and issubclass(cls, errors.NimbusError) and cls is not errors.NimbusError}

    @api_route(bp, "/v1/errors/{code}", ("GET", "POST"), auth=False)
    def fail(principal, request, code):
        if code in by_code:  # a code with a class of its own raises that class
            raise by_code[code]("it failed", field="where")
        raise errors.NimbusError("it failed", code=codes.BY_CODE[code], field="where")

    @api_route(bp, "/v1/boom", auth=False)
    def boom(principal, request):
        raise RuntimeError("a bug")

    app = NimbusChalice(app_name="error-codes")
    app.register_middleware(framework_errors_middleware, "http")
    app.register_blueprint(bp)
    with Client(app) as client:
        yield client.http


def sdk_error(monkeypatch, status: int, body: bytes, calls: list | None = None) -> exceptions.NimbusError:
    """What the SDK's client raises for this answer to a GET (which it may retry: `calls` counts)."""
    monkeypatch.setattr(client_module.time, "sleep", lambda seconds: None)
    client, calls = ApiClient("http://service", "nmb_t", attempts=2), [] if calls is None else calls

    def exchange(method, url, data, headers):
        calls.append(url)
        return status, body, "reason"

    monkeypatch.setattr(client, "_exchange", exchange)
    with pytest.raises(exceptions.NimbusError) as raised:
        client.get("/v1/x")
    return raised.value


def test_the_table_lists_each_code_once_with_an_error_status_and_a_meaning():
    assert len(codes.BY_CODE) == len(codes.ALL)
    assert all(400 <= entry.status <= 599 and entry.meaning for entry in codes.ALL)


@pytest.mark.parametrize("entry", codes.ALL, ids=lambda entry: entry.code)
def test_each_code_is_answered_with_its_status_and_raised_as_its_sdk_exception(http, monkeypatch, entry):
    response = http.get(f"/v1/errors/{entry.code}")
    body = json.loads(response.body)
    assert (response.status_code, body) == (entry.status, {"code": entry.code, "message": "it failed",
                                                           "field": "where"})

    calls = []
    error = sdk_error(monkeypatch, response.status_code, response.body, calls)
    assert type(error) is exceptions._BY_CODE[entry.code] and type(error) is not exceptions.NimbusError
    assert (error.status, error.code, error.message, error.field) == (entry.status, entry.code, "it failed", "where")
    # Only a service that is briefly unavailable is asked again
    retried = isinstance(error, exceptions.ServiceUnavailableError)
    assert len(calls) == (2 if retried else 1) and (entry.status == 503 or not retried)


def test_the_sdk_keys_no_code_the_table_does_not_have():
    assert set(exceptions._BY_CODE) == set(codes.BY_CODE)


def test_an_unhandled_exception_is_an_internal_error(http, monkeypatch):
    response = http.get("/v1/boom")
    assert (response.status_code, json.loads(response.body)) == (500, {"code": "InternalError",
                                                                       "message": "internal error"})
    assert type(sdk_error(monkeypatch, response.status_code, response.body)) is exceptions.InternalServerError


def test_what_chalice_answers_itself_gets_the_tables_code(http, monkeypatch):
    wrong_method = http.put("/v1/errors/Invalid")
    wrong_type = http.post("/v1/errors/Invalid", headers={"Content-Type": "text/plain"}, body="x")
    for response, entry in ((wrong_method, codes.METHOD_NOT_ALLOWED), (wrong_type, codes.UNSUPPORTED_MEDIA_TYPE)):
        body = json.loads(response.body)
        assert (response.status_code, body["code"]) == (entry.status, entry.code)
        assert type(sdk_error(monkeypatch, response.status_code, response.body)) is exceptions._BY_CODE[entry.code]
    assert json.loads(wrong_type.body)["field"] == "Content-Type"


def test_answers_from_aws_in_front_of_the_api_go_by_their_status(monkeypatch):
    for status, expected in [(429, exceptions.ServiceUnavailableError), (502, exceptions.ServiceUnavailableError),
                             (504, exceptions.ServiceUnavailableError), (403, exceptions.ForbiddenError),
                             (500, exceptions.InternalServerError)]:
        assert type(sdk_error(monkeypatch, status, b'{"message": "from the gateway"}')) is expected


def all_error_classes() -> set[type]:
    import chalicelib.api.app  # noqa: F401 - every module of the API, so every subclass is defined

    found, todo = set(), [errors.NimbusError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return {cls for cls in found if cls.__module__.startswith("chalicelib.")}


def test_every_error_class_of_the_server_has_a_code_of_the_table():
    classes = all_error_classes()
    assert {errors.Invalid, errors.Unavailable} < classes  # the walk found the hierarchy
    for cls in classes:
        assert cls.code in codes.BY_CODE, f"{cls.__qualname__} answers {cls.code!r}, which is not in the table"
        assert cls.status == codes.BY_CODE[cls.code].status, cls


def test_error_answers_built_outside_the_error_classes_use_the_tables_codes_and_statuses():
    """The scoring runtime and hosts build their answers without the error classes (they run where
    chalice and pydantic are not): their literal codes and statuses must be the table's."""
    builders = {"error_answer": (0, 1), "error_result": (0, 2)}  # positions of (status, code)
    seen = []
    for path in CHALICELIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(CHALICELIB)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in builders:
                status_at, code_at = builders[node.func.id]
                args = node.args
                if len(args) > code_at and isinstance(args[code_at], ast.Constant):
                    code = args[code_at].value
                    status = args[status_at].value if isinstance(args[status_at], ast.Constant) else None
                    seen.append((where, code, status))
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "code" and isinstance(value, ast.Constant):
                        seen.append((where, value.value, None))
    assert len(seen) > 10  # the scan sees the scoring answers
    for where, code, status in seen:
        assert code in codes.BY_CODE, f"{where} answers {code!r}, which is not in nimbus/error_codes.py"
        assert status in (None, codes.BY_CODE[code].status), f"{where} sends {code!r} with {status}"


def test_docs_api_lists_the_table_and_the_sdk_exception_of_each_code():
    docs = (CHALICELIB.parent / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\d{3}) \| [^|]+ \| `(\w+)`", docs, re.MULTILINE)
    assert {code: (int(status), sdk) for code, status, sdk in rows} == {
        entry.code: (entry.status, exceptions._BY_CODE[entry.code].__name__) for entry in codes.ALL}
