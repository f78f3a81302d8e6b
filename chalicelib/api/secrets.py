"""Workspace secrets: /v1/workspaces/{workspace}/secrets[/{name}] for contributors (names and dates, never
values) and /v1/workspaces/{workspace}/runs/{run_id}/secrets/{name}, the value, for a run's own token only."""
from chalice import Blueprint

from chalicelib.api import responses as answer
from chalicelib.api.models import SetSecret
from chalicelib.api.routing import api_route
from chalicelib.api.service_locator import services
from chalicelib.errors import Forbidden
from chalicelib.services.workspace_secrets import WorkspaceSecrets

bp = Blueprint(__name__)
SECRETS = "/v1/workspaces/{workspace}/secrets"
SECRET = SECRETS + "/{name}"
RUN_SECRET = "/v1/workspaces/{workspace}/runs/{run_id}/secrets/{name}"


def workspace_secrets() -> WorkspaceSecrets:
    return services().workspace_secrets


@api_route(bp, SECRET, ("PUT",), body=SetSecret, role="contributor", response=answer.SecretInfo)
def set_secret(principal, request, workspace, name, body):
    return workspace_secrets().set(principal, workspace, name, body.value)


@api_route(bp, SECRETS, role="contributor", response=answer.SecretList)
def list_secrets(principal, request, workspace):
    """Contributors only: a secret's name can say what it unlocks, which readers need not learn."""
    return workspace_secrets().list(workspace)


@api_route(bp, SECRET, ("DELETE",), role="contributor", response=answer.SecretDeleted)
def delete_secret(principal, request, workspace, name):
    return workspace_secrets().delete(workspace, name, by=principal)


@api_route(bp, RUN_SECRET, role="contributor", run_token=True, response=answer.SecretValue)
def read_secret(principal, request, workspace, run_id, name):
    """A run's token only (api_route has checked it is the run's own, or its parent's, and that its submitter
    still may set secrets): no person's token reads a value back, whatever their role."""
    if principal.run_id is None:
        raise Forbidden("a secret's value is given only to a run of its workspace, through the run's token")
    return {"name": name, "value": workspace_secrets().read(workspace, name, by=principal)}
