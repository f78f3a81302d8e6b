"""Users and tokens: /whoami, /users, /users/{user}/tokens."""
from __future__ import annotations

from chalice import Blueprint

from chalicelib.api.service_locator import services
from chalicelib.api.models import CreateToken, CreateUser
from chalicelib.api import responses as answer
from chalicelib.api.routing import api_route

bp = Blueprint(__name__)


@api_route(bp, "/v1/whoami", run_token=True, scoped_token=True, response=answer.Caller)
def whoami(principal, request):
    return {"user": principal.user, "is_admin": principal.is_admin, "token_id": principal.token_id,
            "run_id": principal.run_id, "workspace": principal.workspace, "role": principal.max_role}


@api_route(bp, "/v1/users", ("POST",), body=CreateUser, status=201, response=answer.User)
def create_user(principal, request, body):
    return services().identity.create_user(body.name, is_admin=body.is_admin, by=principal)


@api_route(bp, "/v1/users", response=answer.UserList)
def list_users(principal, request):
    return {"users": services().identity.list_users(principal)}


@api_route(bp, "/v1/users/{user}/tokens", ("POST",), body=CreateToken, status=201, response=answer.NewToken)
def create_token(principal, request, user, body):
    return services().identity.create_token(user, name=body.name, expires_in=body.expires_in,
                                            workspace=body.workspace, role=body.role, by=principal)


@api_route(bp, "/v1/users/{user}/tokens", response=answer.TokenList)
def list_tokens(principal, request, user):
    return {"tokens": services().identity.list_tokens(user, principal)}


@api_route(bp, "/v1/users/{user}/tokens/{token_id}", ("DELETE",), response=answer.TokenRevoked)
def revoke_token(principal, request, user, token_id):
    services().identity.revoke_token(user, token_id, principal)
    return {"revoked": token_id}
