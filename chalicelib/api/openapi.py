"""The OpenAPI 3.1 document of the API, made from ROUTES (api/routing.py) and the pydantic models the
routes name: request bodies (api/models.py) and answers (api/responses.py). Nothing about a route is
written twice: a route declared with api_route is in the document.

Served at GET /v1/openapi.json, to anyone: it describes the routes, and holds nothing a caller could
not learn by calling them. It is built once per process.
"""
from __future__ import annotations

import copy
import functools
import re
from typing import Any

from chalice import Blueprint
from pydantic import BaseModel, TypeAdapter, ValidationError

from chalicelib.api import responses as answer
from chalicelib.api.routing import ANYONE, ENDPOINT_KEY, ROUTES, TOKEN, QueryParam, RouteSpec, api_route

OPENAPI_PATH = "/v1/openapi.json"
_REF = "#/components/schemas/{model}"
_PATH_PARAMETER = re.compile(r"{(\w+)}")
_SECURITY = {TOKEN: [{"bearerToken": []}], ENDPOINT_KEY: [{"endpointKey": []}], ANYONE: []}
_SECURITY_SCHEMES = {
    "bearerToken": {"type": "http", "scheme": "bearer",
                    "description": "a user's API token (nmb_…), or a run token, which acts for its run only"},
    "endpointKey": {"type": "http", "scheme": "bearer",
                    "description": "one of the endpoint's two keys (GET …/endpoints/{endpoint}/keys)"},
}
_ERRORS = {"4XX": "refused: invalid input (400, `field` names it), no valid credentials (401), a role too low "
                  "(403), not found (404), a conflict with the current state (409), too large (413), …",
           "5XX": "a failure: safe to retry on 503"}
_TAG = re.compile(r"^/v1/(?:workspaces/{workspace}/)?([a-z-]+)")

bp = Blueprint(__name__)


def document() -> dict:
    """The document (a fresh copy: callers may change theirs). Import the app first (chalicelib.api.app): its
    blueprints declare the routes."""
    return copy.deepcopy(_document())


@functools.lru_cache(maxsize=1)
def _document() -> dict:
    shapes: list[tuple[tuple[str, int], str, TypeAdapter]] = []
    for index, spec in enumerate(ROUTES):
        if spec.body is not None:
            shapes.append(((f"body{index}", 0), "validation", TypeAdapter(spec.body)))
        for status, model in _successes(spec):
            if model is not None:
                shapes.append(((f"answer{index}", status), "serialization", TypeAdapter(model)))
    shapes.append((("error", 0), "serialization", TypeAdapter(answer.ErrorBody)))
    schemas, definitions = TypeAdapter.json_schemas(shapes, ref_template=_REF)
    paths: dict[str, dict] = {}
    for index, spec in enumerate(ROUTES):
        for method in spec.methods:
            paths.setdefault(spec.path, {})[method.lower()] = _operation(index, spec, method, schemas)
    for path, item in paths.items():
        names = _PATH_PARAMETER.findall(path)
        if names:
            item["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                  for n in names]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Nimbus", "version": "1",
                 "description": "A serverless ML platform: workspaces, runs, models and endpoints (docs/api.md)."},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "paths": paths,
        "components": {"schemas": definitions.get("$defs", {}), "securitySchemes": _SECURITY_SCHEMES,
                       "responses": {code: {"description": text, "content": {"application/json": {
                           "schema": schemas[("error", 0), "serialization"]}}} for code, text in _ERRORS.items()}},
    }


def _successes(spec: RouteSpec) -> list[tuple[int, Any]]:
    return [(spec.status, spec.response), *spec.other_responses]


def _operation(index: int, spec: RouteSpec, method: str, schemas: dict) -> dict:
    doc = (spec.view.__doc__ or "").strip()
    operation: dict[str, Any] = {
        # Unique: a view serves one route; one declared with several methods gets one id per method.
        "operationId": f"{spec.view.__module__.rsplit('.', 1)[-1]}.{spec.view.__name__}"
                       + (f".{method.lower()}" if len(spec.methods) > 1 else ""),
        "summary": spec.view.__name__.replace("_", " "),
        "tags": [_tag(spec.path)],
        "security": _SECURITY[spec.callers],
    }
    if doc:
        operation["description"] = doc
    operation["x-nimbus-role"] = spec.role  # the minimum workspace role (null: the view decides)
    operation["x-nimbus-run-token"] = spec.run_token
    if spec.query:
        operation["parameters"] = [_query_parameter(q) for q in spec.query]
    if spec.body is not None:
        operation["requestBody"] = {"required": not _accepts_empty(spec.body), "content": {
            media: {"schema": schemas[(f"body{index}", 0), "validation"]} for media in spec.content_types}}
    elif spec.callers == ENDPOINT_KEY:  # the scoring route: the body goes to the entry script as it is
        operation["requestBody"] = {"required": False, "content": {media: {} for media in spec.content_types}}
    responses: dict[str, Any] = {}
    for status, model in _successes(spec):
        entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "done")}
        if model is not None:
            entry["content"] = {"application/json": {"schema": schemas[(f"answer{index}", status), "serialization"]}}
        responses[str(status)] = entry
    for code in _ERRORS:
        responses[code] = {"$ref": f"#/components/responses/{code}"}
    operation["responses"] = responses
    return operation


_STATUS_TEXT = {200: "done", 201: "created", 202: "accepted: under way (GET it until it settles)",
                204: "nothing to answer"}


def _query_parameter(query: QueryParam) -> dict:
    if query.kind is list:
        schema: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
    elif query.kind is bool:
        schema = {"type": "boolean"}
    elif query.kind is int:
        schema = {"type": "integer"}
        if query.low is not None:
            schema["minimum"] = query.low
        if query.high is not None:
            schema["maximum"] = query.high
    else:
        schema = {"type": "string"}
    if query.default is not None:
        schema["default"] = query.default
    parameter: dict[str, Any] = {"name": query.name, "in": "query", "required": query.required, "schema": schema}
    if query.description:
        parameter["description"] = query.description
    if query.kind is list:
        parameter.update(style="form", explode=True)
    return parameter


def _accepts_empty(model: type[BaseModel]) -> bool:
    """Whether the route takes a request without a body (its model's fields all have defaults)."""
    try:
        model.model_validate({})
    except ValidationError:
        return False
    return True


def _tag(path: str) -> str:
    match = _TAG.match(path)
    return match[1] if match else "platform"


@api_route(bp, OPENAPI_PATH, auth=False, response=dict[str, Any])
def openapi(principal, request):
    """This document."""
    return _document()
