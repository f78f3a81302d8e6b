"""Runs: /v1/workspaces/{workspace}/runs[/{run_id}[/tags|/properties|/status|/children]]."""
from chalice import Blueprint

from chalicelib.api.deps import services
from chalicelib.api.models import AddProperties, ChangeStatus, CreateRun, UpdateTags
from chalicelib.api.routing import endpoint, query_int, query_str
from chalicelib.services.runs import run_view

bp = Blueprint(__name__)
RUN = "/v1/workspaces/{workspace}/runs/{run_id}"


@endpoint(bp, "/v1/workspaces/{workspace}/runs", ("POST",), body=CreateRun, role="contributor", status=201)
def create_run(principal, request, workspace, body):
    run = services().runs.create(principal, workspace, body.experiment, parent_id=body.parent_id, tags=body.tags,
                                 properties=body.properties, display_name=body.display_name, status=body.status)
    return run_view(run)


@endpoint(bp, RUN, role="reader")
def show_run(principal, request, workspace, run_id):
    run = services().runs.get(workspace, run_id)
    return run_view(run, services().runs.children_statuses(run_id))


@endpoint(bp, RUN + "/tags", ("PATCH",), body=UpdateTags, role="contributor")
def update_tags(principal, request, workspace, run_id, body):
    return run_view(services().runs.set_tags(workspace, run_id, body.tags, body.remove))


@endpoint(bp, RUN + "/properties", ("POST",), body=AddProperties, role="contributor")
def add_properties(principal, request, workspace, run_id, body):
    return run_view(services().runs.add_properties(workspace, run_id, body.properties))


@endpoint(bp, RUN + "/status", ("POST",), body=ChangeStatus, role="contributor")
def change_status(principal, request, workspace, run_id, body):
    return run_view(services().runs.transition(workspace, run_id, body.status, body.error))


@endpoint(bp, RUN + "/cancel", ("POST",), role="contributor")
def cancel_run(principal, request, workspace, run_id):
    return run_view(services().runs.transition(workspace, run_id, "Canceled", {"message": f"canceled by {principal.user}"}))


@endpoint(bp, RUN + "/children", role="reader")
def list_children(principal, request, workspace, run_id):
    return services().runs.children(workspace, run_id, query_int(request, "max_results", 100, 1, 1000),
                                    query_str(request, "page_token"))
