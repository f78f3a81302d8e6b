"""Users and tokens: /whoami, /users, /users/{user}/tokens."""
from __future__ import annotations

from chalice import Blueprint
from pydantic import BaseModel

from chalicelib.api.service_locator import services
from chalicelib.api.models import CreateToken, CreateUser
from chalicelib.api.routing import api_route

bp = Blueprint(__name__)


class Token(BaseModel):
    """A token as listed: never its secret."""

    token_id: str
    user: str
    name: str
    created: str
    expires: str | None  # None: it never expires
    workspace: str | None  # None: every workspace its user is a member of
    role: str | None  # the highest role it acts with in `workspace`
    last_used: str | None  # to the hour: refreshed at most hourly


class CreatedToken(Token):
    token: str  # the secret, answered this once


class Tokens(BaseModel):
    tokens: list[Token]


class RevokedToken(BaseModel):
    revoked: str


class Whoami(BaseModel):
    user: str
    is_admin: bool
    token_id: str
    run_id: str | None
    workspace: str | None  # a scoped token's (or a run token's) one workspace
    role: str | None  # a scoped token's ceiling there


@api_route(bp, "/v1/whoami", run_token=True, scoped_token=True, response=Whoami)
def whoami(principal, request):
    return {"user": principal.user, "is_admin": principal.is_admin, "token_id": principal.token_id,
            "run_id": principal.run_id, "workspace": principal.workspace, "role": principal.max_role}


@api_route(bp, "/v1/users", ("POST",), body=CreateUser, status=201)
def create_user(principal, request, body):
    return services().identity.create_user(body.name, is_admin=body.is_admin, by=principal)


@api_route(bp, "/v1/users")
def list_users(principal, request):
    return {"users": services().identity.list_users(principal)}


@api_route(bp, "/v1/users/{user}/tokens", ("POST",), body=CreateToken, status=201, response=CreatedToken)
def create_token(principal, request, user, body):
    return services().identity.create_token(user, name=body.name, expires_in=body.expires_in,
                                            workspace=body.workspace, role=body.role, by=principal)


@api_route(bp, "/v1/users/{user}/tokens", response=Tokens)
def list_tokens(principal, request, user):
    return {"tokens": services().identity.list_tokens(user, principal)}


@api_route(bp, "/v1/users/{user}/tokens/{token_id}", ("DELETE",), response=RevokedToken)
def revoke_token(principal, request, user, token_id):
    services().identity.revoke_token(user, token_id, principal)
    return {"revoked": token_id}
