"""Datastores: /v1/workspaces/{workspace}/datastores[/{name}[/credentials]] and …/default-datastore
(docs/datasets.md, "Datastores")."""
from chalice import Blueprint

from chalicelib.api import responses as answer
from chalicelib.api.models import DatastoreCredentials, DefaultDatastore, RegisterDatastore
from chalicelib.api.routing import api_route
from chalicelib.api.service_locator import services

bp = Blueprint(__name__)
DATASTORES = "/v1/workspaces/{workspace}/datastores"
DATASTORE = DATASTORES + "/{name}"


def _keys(credentials) -> dict | None:
    return credentials.model_dump() if credentials is not None else None


@api_route(bp, DATASTORES, ("POST",), body=RegisterDatastore, role="contributor", status=201,
           response=answer.Datastore)
def register_datastore(principal, request, workspace, body):
    """The connection is checked first (one listing under the prefix); a refusal is a 400 naming the store's
    error code (`details.store_code`) and nothing is saved. `local` datastores: platform admins only."""
    return services().datastores.register(principal, workspace, body.name, body.type, body.settings,
                                          _keys(body.credentials), body.description, body.overwrite)


@api_route(bp, DATASTORES, role="reader", response=answer.DatastoreList)
def list_datastores(principal, request, workspace):
    return {"datastores": services().datastores.list(workspace)}


@api_route(bp, DATASTORE, role="reader", response=answer.Datastore)
def show_datastore(principal, request, workspace, name):
    return services().datastores.get(workspace, name)


@api_route(bp, DATASTORE + "/credentials", ("PUT",), body=DatastoreCredentials, role="contributor",
           response=answer.Datastore)
def update_datastore_credentials(principal, request, workspace, name, body):
    return services().datastores.update_credentials(principal, workspace, name, _keys(body.credentials))


@api_route(bp, DATASTORE, ("DELETE",), role="contributor", response=answer.DatastoreDeleted)
def delete_datastore(principal, request, workspace, name):
    return services().datastores.delete(principal, workspace, name)


@api_route(bp, "/v1/workspaces/{workspace}/default-datastore", role="reader", response=answer.Datastore)
def show_default_datastore(principal, request, workspace):
    return services().datastores.default(workspace)


@api_route(bp, "/v1/workspaces/{workspace}/default-datastore", ("PUT",), body=DefaultDatastore,
           role="contributor", response=answer.Datastore)
def set_default_datastore(principal, request, workspace, body):
    return services().datastores.set_default(principal, workspace, body.name)
