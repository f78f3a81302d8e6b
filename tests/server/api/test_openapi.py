"""The OpenAPI document: every route in it, described (answers, bodies, query parameters), valid OpenAPI
3.1, and served at /v1/openapi.json to anyone."""
from __future__ import annotations

import ast
import inspect
import json
import textwrap

import pytest
from chalice.test import Client
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import BaseModel

from chalicelib.api.app import app
from chalicelib.api.openapi import OPENAPI_PATH, _document, document
from chalicelib.api.routing import ENDPOINT_KEY, ROUTES, RouteSpec

_QUERY_READERS = {"query_int": int, "query_str": str, "query_list": list, "query_bool": bool}


def undescribed(routes: list[RouteSpec]) -> list[str]:
    """The routes missing a description: no answer model, or a body the view reads but no body model."""
    problems = []
    for spec in routes:
        where = f"{'/'.join(spec.methods)} {spec.path} ({spec.view.__name__})"
        if spec.response is None:
            problems.append(f"{where}: no response= model")
        takes_body = "body" in inspect.signature(spec.view).parameters
        if takes_body != (spec.body is not None):
            problems.append(f"{where}: its view {'takes' if takes_body else 'does not take'} a body but body= is "
                            f"{spec.body!r}")
    return problems


def query_reads(view) -> set[tuple[str, type]]:
    """The (name, kind) of every query parameter the view reads with routing's query_* helpers."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(view)))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _QUERY_READERS:
            name = node.args[1]
            assert isinstance(name, ast.Constant), f"{view.__name__} reads a query parameter by a computed name"
            found.add((name.value, _QUERY_READERS[node.func.id]))
    return found


def test_every_route_has_an_answer_model_and_a_body_model_where_it_takes_a_body():
    assert len(ROUTES) >= 74
    assert undescribed(ROUTES) == []


def test_a_route_without_an_answer_model_or_body_model_is_reported():
    def view(principal, request, workspace, body):
        return {}

    bare = RouteSpec("/v1/things/{workspace}", ("POST",), "token", "reader", False, None, None, 200,
                     ("application/json",), view)
    assert undescribed([bare]) == [
        "POST /v1/things/{workspace} (view): no response= model",
        "POST /v1/things/{workspace} (view): its view takes a body but body= is None"]


@pytest.mark.parametrize("spec", ROUTES, ids=lambda s: f"{'/'.join(s.methods)} {s.path}")
def test_the_query_parameters_a_view_reads_are_the_ones_its_route_declares(spec):
    declared = {(q.name, q.kind) for q in spec.query}
    assert query_reads(spec.view) == declared


def test_the_document_is_valid_openapi_3_1():
    doc = document()
    assert doc["openapi"].startswith("3.1")
    errors = [e.message for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == []


def test_the_document_lists_every_route_with_its_parameters_bodies_answers_and_security():
    doc = document()
    for spec in ROUTES:
        item = doc["paths"][spec.path]
        path_names = {p["name"] for p in item.get("parameters", [])}
        assert path_names == set(inspect.signature(spec.view).parameters) - {"principal", "request", "body"}
        for method in spec.methods:
            operation = item[method.lower()]
            assert {p["name"] for p in operation.get("parameters", [])} == {q.name for q in spec.query}
            assert str(spec.status) in operation["responses"]
            assert {"4XX", "5XX"} <= set(operation["responses"])
            if spec.body is not None:
                assert "application/json" in operation["requestBody"]["content"]
            security = [name for requirement in operation["security"] for name in requirement]
            assert security == {"token": ["bearerToken"], "endpoint key": ["endpointKey"], "anyone": []}[spec.callers]
    score = doc["paths"]["/v1/workspaces/{workspace}/endpoints/{endpoint}/score"]["post"]
    assert set(score["requestBody"]["content"]) == {"application/json", "text/plain", "text/csv",
                                                    "application/octet-stream"}
    assert [s.callers for s in ROUTES if s.path.endswith("/score")] == [ENDPOINT_KEY]


def test_answer_models_are_closed_and_bodies_refuse_unknown_fields():
    """An answer with a field the document does not name fails the checks of the API tests and the fuzz."""
    schemas = document()["components"]["schemas"]
    for spec in ROUTES:
        for model in (spec.body, spec.response, *(m for _, m in spec.other_responses)):
            if isinstance(model, type) and issubclass(model, BaseModel):
                assert schemas[model.__name__].get("additionalProperties") is False, model.__name__


def test_required_and_nullable_fields_follow_the_models():
    schemas = document()["components"]["schemas"]
    run = schemas["Run"]
    assert {"id", "status", "ended", "parent_id", "children"} <= set(run["required"])
    assert {"type": "null"} in run["properties"]["ended"]["anyOf"]
    target = schemas["ComputeTarget"]
    assert "resources" not in target["required"] and "default" not in target["properties"]["resources"]
    assert schemas["ErrorBody"]["required"] == ["code", "message"]
    assert "from" in schemas["AliasMove"]["properties"]


def test_the_document_is_served_to_anyone_and_built_once():
    with Client(app) as client:
        response = client.http.get(OPENAPI_PATH)
    assert response.status_code == 200
    assert json.loads(response.body) == json.loads(json.dumps(document()))
    assert _document() is _document()
    changed = document()
    changed["paths"].clear()
    assert document()["paths"], "a caller's copy is its own"


def test_operation_ids_are_unique():
    ids = [operation["operationId"] for item in document()["paths"].values()
           for method, operation in item.items() if method != "parameters"]
    assert len(ids) == len(set(ids)) == sum(len(spec.methods) for spec in ROUTES)
