"""Runs: /v1/workspaces/{workspace}/runs[/{run_id}[/tags|/properties|/status|/heartbeat|/children]]."""
from chalice import Blueprint
from pydantic import Field

from chalicelib.api.service_locator import services
from chalicelib.api.models import AddProperties, Body, ChangeStatus, CreateRun, UpdateTags, WholeNumber
from chalicelib.api import responses as answer
from chalicelib.api.routing import PAGE_TOKEN, api_route, max_results, query_int, query_str
from chalicelib.errors import Forbidden, Invalid
from chalicelib.services.run_views import run_view
from chalicelib.services.runs import Reporter

bp = Blueprint(__name__)
RUN = "/v1/workspaces/{workspace}/runs/{run_id}"


class RunnerIdentity(Body):
    """Who reports, sent by the runner (docs/compute.md, "Retries and runner identity")."""

    runner_id: str | None = Field(default=None, max_length=64)
    attempt: WholeNumber | None = None

    def reporter(self) -> Reporter | None:
        if self.runner_id is None and self.attempt is None:
            return None
        return Reporter(self.runner_id, self.attempt)


class ReportStatus(ChangeStatus, RunnerIdentity):
    pass


@api_route(bp, "/v1/workspaces/{workspace}/runs", ("POST",), body=CreateRun, role="contributor", status=201,
          run_token=True, response=answer.Run)
def create_run(principal, request, workspace, body):
    """An interactive run, a child run, or (with a snapshot) a submitted script run."""
    if principal.run_id is not None and not (
            body.parent_id and services().runs.descends_from(workspace, body.parent_id, principal.run_id)):
        raise Forbidden(f"a run token may only create child runs under its own run ({principal.run_id})")
    if body.snapshot_id is None:
        for name in ("run_config", "git", "ci", "client_token"):
            if getattr(body, name) is not None:
                raise Invalid(f"{name} belongs to a submitted run: give snapshot_id too", field=name)
        run = services().runs.create(principal, workspace, body.experiment, parent_id=body.parent_id, tags=body.tags,
                                     properties=body.properties, display_name=body.display_name, status=body.status)
        return run_view(run)
    if body.run_config is None:
        raise Invalid("a submitted run needs its run_config", field="run_config")
    run, _ = services().submissions.submit(
        principal, workspace, body.experiment, snapshot_id=body.snapshot_id,
        run_config=body.run_config.model_dump(), git=body.git.model_dump() if body.git else None, ci=body.ci,
        client_token=body.client_token, tags=body.tags, properties=body.properties, display_name=body.display_name,
        parent_id=body.parent_id)
    return run_view(run)


@api_route(bp, RUN, role="reader", run_token=True, response=answer.Run)
def show_run(principal, request, workspace, run_id):
    run = services().runs.get(workspace, run_id)
    return run_view(run, services().runs.children_statuses(run_id))


@api_route(bp, RUN + "/tags", ("PATCH",), body=UpdateTags, role="contributor", run_token=True, response=answer.Run)
def update_tags(principal, request, workspace, run_id, body):
    return run_view(services().runs.set_tags(workspace, run_id, body.tags, body.remove))


@api_route(bp, RUN + "/properties", ("POST",), body=AddProperties, role="contributor", run_token=True, response=answer.Run)
def add_properties(principal, request, workspace, run_id, body):
    return run_view(services().runs.add_properties(workspace, run_id, body.properties))


@api_route(bp, RUN + "/status", ("POST",), body=ReportStatus, role="contributor", run_token=True, response=answer.Run)
def change_status(principal, request, workspace, run_id, body):
    run = services().runs.transition(workspace, run_id, body.status, body.error, body.reporter())
    if body.status == "Canceled" and principal.run_id is None:
        services().submissions.cancel(workspace, run)
    return run_view(run)


@api_route(bp, RUN + "/cancel", ("POST",), role="contributor", run_token=True, response=answer.Run)
def cancel_run(principal, request, workspace, run_id):
    run = services().runs.transition(workspace, run_id, "Canceled", {"message": f"canceled by {principal.user}"})
    services().submissions.cancel(workspace, run)  # its job, if a dispatcher here runs it, is stopped
    return run_view(run)


@api_route(bp, RUN + "/heartbeat", ("POST",), body=RunnerIdentity, role="contributor", run_token=True,
           response=answer.Heartbeat)
def heartbeat(principal, request, workspace, run_id, body):
    """The runner says it is alive (every 60 s); runs on AWS Batch whose heartbeats stop are failed. A
    beat of a runner that no longer holds the run is refused (409): that runner stops."""
    run = services().runs.heartbeat(workspace, run_id, body.reporter())
    return {"id": run["id"], "status": run["status"], "heartbeat": run["heartbeat"]}


@api_route(bp, RUN + "/children", role="reader", run_token=True,
           response=answer.RunPage,
           query=(max_results(100, 1000), PAGE_TOKEN))
def list_children(principal, request, workspace, run_id):
    return services().runs.children(workspace, run_id, query_int(request, "max_results", 100, 1, 1000),
                                    query_str(request, "page_token"))
