"""Workspaces and members: /v1/workspaces[/{workspace}[/members[/{user}]]]."""
from chalice import Blueprint

from chalicelib.api.service_locator import services
from chalicelib.api.models import AddMember, CreateWorkspace
from chalicelib.api import responses as answer
from chalicelib.api.routing import QueryParam, api_route, query_bool

bp = Blueprint(__name__)


@api_route(bp, "/v1/workspaces", ("POST",), body=CreateWorkspace, status=201, response=answer.Workspace)
def create_workspace(principal, request, body):
    return services().workspaces.create(principal, body.name, body.description)


@api_route(bp, "/v1/workspaces", scoped_token=True, response=answer.WorkspaceList)
def list_workspaces(principal, request):
    return {"workspaces": services().workspaces.list(principal)}


@api_route(bp, "/v1/workspaces/{workspace}", response=answer.Workspace)
def show_workspace(principal, request, workspace):
    return services().workspaces.get(principal, workspace)


@api_route(bp, "/v1/workspaces/{workspace}", ("DELETE",),
           response=answer.WorkspaceDeleted,
           query=(QueryParam("force", bool, "delete everything in it too"),))
def delete_workspace(principal, request, workspace):
    force = query_bool(request, "force")
    if force:  # endpoints own running functions: stop them before their records go
        services().workspaces.authorize(principal, workspace, "owner")
        for item in services().deployments.list_endpoints(workspace)["endpoints"]:
            services().deployments.delete_endpoint(workspace, item["name"], by=principal)
        services().workspace_secrets.delete_all(workspace)  # their values live outside the table
    # Compute targets go with it: their runs are canceled (their jobs stopped) and the Batch resources Nimbus
    # made are deleted through the provisioner (docs/compute.md).
    return services().workspaces.delete(principal, workspace, force=force, targets=services().compute_targets,
                                        stop_run=services().submissions.cancel)


@api_route(bp, "/v1/workspaces/{workspace}/members", ("POST",), body=AddMember, status=201, response=answer.Member)
def add_member(principal, request, workspace, body):
    return services().workspaces.add_member(principal, workspace, body.user, body.role)


@api_route(bp, "/v1/workspaces/{workspace}/members", response=answer.MemberList)
def list_members(principal, request, workspace):
    return {"members": services().workspaces.list_members(principal, workspace)}


@api_route(bp, "/v1/workspaces/{workspace}/members/{user}", ("DELETE",), response=answer.MemberRemoved)
def remove_member(principal, request, workspace, user):
    services().workspaces.remove_member(principal, workspace, user)
    return {"removed": user}
