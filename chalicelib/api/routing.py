"""The one place where requests are authenticated and parsed and domain errors become HTTP responses.

Chalice middleware never sees an exception a view raises, so every route goes through `endpoint`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from chalice import Blueprint, Response
from pydantic import BaseModel, ValidationError

from chalicelib.api.service_locator import services
from chalicelib.errors import Forbidden, Invalid, NimbusError, NotFound, TooLarge, Unauthorized
from chalicelib.json_codec import dumps_strict, loads_exact
from chalicelib.api.request_telemetry import logger
from nimbus import error_codes as codes

MAX_BODY = 6 * 1024 * 1024  # a Lambda request payload stops at 6 MB


# How each route's callers prove who they are, by route path: what refuses the unauthenticated first.
_CALLERS: dict[str, str] = {}
TOKEN, ENDPOINT_KEY, ANYONE = "token", "endpoint key", "anyone"


@dataclass(frozen=True)
class QueryParam:
    """A query parameter a route reads (with query_int, query_str, query_list or query_bool), declared on
    its api_route so the OpenAPI document lists it. `kind` is int, str, bool or list (repeatable)."""

    name: str
    kind: type = str
    description: str = ""
    default: Any = None
    low: int | None = None  # an int's bounds, as its view checks them
    high: int | None = None
    required: bool = False


@dataclass(frozen=True)
class RouteSpec:
    """One route as declared: what the OpenAPI document and the authorization matrix are made from."""

    path: str
    methods: tuple[str, ...]
    callers: str  # TOKEN, ENDPOINT_KEY or ANYONE
    role: str | None
    run_token: bool
    body: type[BaseModel] | None
    response: Any  # a pydantic model (or a type such as list[Model]) describing the JSON answered
    status: int
    content_types: tuple[str, ...]
    view: Callable
    query: tuple[QueryParam, ...] = ()
    other_responses: tuple[tuple[int, Any], ...] = ()  # (status, model or None for no body) besides `status`
    scoped_token: bool = False  # a token scoped to a workspace may call it (always so with a {workspace})
    admins: bool = False  # an admin passes `role` without being a member


ROUTES: list[RouteSpec] = []


def api_route(bp: Blueprint, path: str, methods: tuple[str, ...] = ("GET",), *, auth: bool = True,
             body: type[BaseModel] | None = None, role: str | None = None, status: int = 200,
             run_token: bool = False, content_types: tuple[str, ...] = ("application/json",),
             endpoint_key: bool = False, response: Any = None, query: tuple[QueryParam, ...] = (),
             other_responses: dict[int, Any] | None = None, scoped_token: bool = False,
             admins: bool = False) -> Callable:
    """Register `fn(principal, request, **path_params[, body])` as a JSON route.

    `auth=False` leaves authentication to the view: `endpoint_key` says its callers present an endpoint
    key (the view checks it), else the route is open to anyone.

    `role` names the minimum workspace role; the route's `workspace` path parameter is checked.
    `run_token` lets a run token in: its workspace must be the route's, a `run_id` path parameter
    must be its run (routes without one check the rest themselves, e.g. a child run's parent), and its
    submitter must still hold `role` there.
    A token scoped to one workspace (docs/api.md, "Tokens") may call a route whose `workspace` path
    parameter names its workspace, with its role capped; elsewhere 403, save routes declared
    `scoped_token` (whoami, the caller's workspaces). `admins` lets an admin (never a scoped token) pass
    `role` without being a member.
    A view may return a chalice Response to answer with its own body and status.
    `response` describes the JSON a successful call answers with (status `status`); `other_responses` maps
    the other success statuses a view may answer with to theirs (None: no body). `query` declares the
    query parameters the view reads. Every route is listed in ROUTES.
    """

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def view(**params: str) -> Response:
            request = bp.current_request
            try:
                principal = services().identity.authenticate(request.headers.get("authorization")) if auth else None
                if principal is not None and principal.run_id is not None:
                    check_run_scope(principal, params, run_token, role)
                else:
                    if principal is not None and principal.scoped:
                        check_token_scope(principal, params, scoped_token)
                    if role is not None and not (admins and principal is not None and principal.is_admin):
                        services().workspaces.authorize(principal, params["workspace"], role)
                kwargs: dict[str, Any] = {"principal": principal, "request": request, **params}
                if body is not None:
                    kwargs["body"] = parse_body(request.raw_body, body)
                result = fn(**kwargs)
                return result if isinstance(result, Response) else json_response(result, status)
            except NimbusError as error:
                return json_response(error.to_dict(), error.status)
            except Exception:  # noqa: BLE001 - the client gets no internals; the log gets everything
                logger.exception("unhandled error", extra={"path": path})
                internal = NimbusError("internal error")
                return json_response(internal.to_dict(), internal.status)

        bp.route(path, methods=list(methods), content_types=list(content_types))(view)
        callers = TOKEN if auth else ENDPOINT_KEY if endpoint_key else ANYONE
        _CALLERS[path] = callers
        ROUTES.append(RouteSpec(path, tuple(methods), callers, role, run_token, body, response, status,
                                tuple(content_types), fn, tuple(query), tuple((other_responses or {}).items()),
                                scoped_token, admins))
        return fn

    return register


def check_run_scope(principal, params: dict, allowed: bool, role: str | None) -> None:
    if not allowed or params.get("workspace", principal.workspace) != principal.workspace:
        raise Forbidden("a run token may act only on its own run")
    if "run_id" in params and not services().runs.descends_from(params["workspace"], params["run_id"],
                                                                 principal.run_id):
        raise Forbidden(f"a run token may act only on its own run ({principal.run_id}) and its child runs")
    if role is not None:
        check_submitter_role(principal, params["workspace"], role)


def check_submitter_role(principal, workspace: str, role: str) -> None:
    """A run token acts for the run's submitter, never beyond the role they hold now: one who left the
    workspace, or became a reader, no longer writes through the tokens of runs still going."""
    try:
        services().workspaces.authorize(principal, workspace, role)
    except NotFound:  # the token's holder knows the workspace: say why rather than hide it
        raise Forbidden(f"run {principal.run_id} was submitted by {principal.user!r}, who is no longer a member of "
                        f"workspace {workspace!r}") from None
    except Forbidden:
        raise Forbidden(f"run {principal.run_id} was submitted by {principal.user!r}, who no longer has the {role} "
                        f"role on workspace {workspace!r}") from None


def check_token_scope(principal, params: dict, allowed: bool) -> None:
    """A scoped token reaches its own workspace's routes and those declared for it, nothing user-level."""
    if "workspace" in params:
        if params["workspace"] != principal.workspace:
            raise Forbidden(f"this token is scoped to workspace {principal.workspace!r}")
    elif not allowed:
        raise Forbidden(f"a token scoped to workspace {principal.workspace!r} cannot call this route")


def parse_body(raw: bytes | None, model: type[BaseModel]) -> BaseModel:
    if raw and len(raw) > MAX_BODY:
        raise TooLarge(f"request body exceeds {MAX_BODY} bytes", field="body")
    try:
        data = loads_exact(raw) if raw else {}
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep to parse
        raise Invalid("request body is not valid JSON", field="body") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Invalid(f"{where}: {first['msg']}", field=where) from None


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(body=dumps_strict(payload).decode(), status_code=status, headers={"Content-Type": "application/json"})


PAGE_TOKEN = QueryParam("page_token", str, "the next_page_token of the page before")


def max_results(default: int, high: int) -> QueryParam:
    return QueryParam("max_results", int, "how many to answer at most", default, 1, high)


def query_int(request, name: str, default: int, low: int, high: int) -> int:
    raw = (request.query_params or {}).get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"{name} must be an integer", field=name) from None
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low} and {high}", field=name)
    return value


def query_str(request, name: str, default: str | None = None) -> str | None:
    return (request.query_params or {}).get(name, default)


def query_list(request, name: str) -> list[str]:
    params = request.query_params
    return params.getlist(name) if params and name in params else []


def query_bool(request, name: str) -> bool:
    raw = (query_str(request, name) or "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise Invalid(f"{name} must be true or false", field=name)
    return raw in ("true", "1", "yes")


# What Chalice answers itself, as {"Code": "MethodNotAllowedError" or "UnsupportedMediaType", "Message"}.
_FRAMEWORK_ERRORS = {405: (codes.METHOD_NOT_ALLOWED, None), 415: (codes.UNSUPPORTED_MEDIA_TYPE, "Content-Type")}


def framework_errors_middleware(event, get_response):
    """Chalice answers a wrong method (405) or content type (415) itself, before any view: a caller who
    could not call the route is refused (401) first, so it learns nothing of the route; the others get
    the API's error shape with the table's code, so clients parse one kind of error."""
    response = get_response(event)
    framework = _FRAMEWORK_ERRORS.get(response.status_code)
    if framework and isinstance(response.body, dict) and "Code" in response.body:
        refusal = _unauthenticated(event)
        if refusal is not None:
            return json_response(refusal.to_dict(), refusal.status)
        code, field = framework
        error = NimbusError(str(response.body.get("Message", "")), code=code, field=field)
        response.body = dumps_strict(error.to_dict()).decode()
        response.headers["Content-Type"] = "application/json"
    return response


def _unauthenticated(event) -> Unauthorized | None:
    """Why the request may not call the route it matched (None: it may, or the route is open)."""
    callers = _CALLERS.get((event.context or {}).get("resourcePath", ""), ANYONE)
    authorization = event.headers.get("authorization")
    try:
        if callers == TOKEN:
            services().identity.authenticate(authorization)
        elif callers == ENDPOINT_KEY:
            params = event.uri_params or {}
            services().deployments.check_key(params.get("workspace", ""), params.get("endpoint", ""), authorization)
    except Unauthorized as refused:
        return refused
    return None
