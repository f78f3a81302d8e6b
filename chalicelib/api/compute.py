"""Compute targets: /v1/workspaces/{workspace}/computes[/{name}[/claim]] (docs/compute.md)."""
from chalice import Blueprint, Response

from chalicelib.api.service_locator import services
from chalicelib.api.models import CreateCompute
from chalicelib.api import responses as answer
from chalicelib.api.routing import api_route, json_response
from chalicelib.errors import Invalid
from chalicelib.services.run_views import run_view

bp = Blueprint(__name__)
COMPUTES = "/v1/workspaces/{workspace}/computes"


@api_route(bp, COMPUTES, ("POST",), body=CreateCompute, role="contributor", status=201,
           response=answer.ComputeTarget, other_responses={202: answer.ComputeTarget})
def create_compute(principal, request, workspace, body):
    """201 with the target when it is usable now; 202 while the cluster Nimbus makes is on its way (`state`
    Creating: GET the target until it is Succeeded or Failed)."""
    target = services().compute_targets.create(principal, workspace, body.name, body.type, body.settings)
    return json_response(target, 202) if target["state"] == "Creating" else target


@api_route(bp, COMPUTES, role="reader", response=answer.ComputeTargetList)
def list_computes(principal, request, workspace):
    return {"computes": services().compute_targets.list(workspace)}


@api_route(bp, COMPUTES + "/{name}", role="reader", response=answer.ComputeTargetShown)
def show_compute(principal, request, workspace, name):
    return services().compute_targets.get(workspace, name)


@api_route(bp, COMPUTES + "/{name}", ("DELETE",), role="contributor",
           response=answer.ComputeTargetDeleted, other_responses={202: answer.ComputeTargetDeleted})
def delete_compute(principal, request, workspace, name):
    """200 once the target is gone; 202 while Batch is still taking down the cluster Nimbus made (the target
    shows `Deleting` until then, and disappears by itself)."""
    if services().compute_targets.delete(workspace, name, by=principal):
        return {"name": name, "deleted": True}
    return json_response({"name": name, "deleted": False, "state": "Deleting"}, 202)


@api_route(bp, COMPUTES + "/{name}/claim", ("POST",), role="contributor",
           response=answer.ClaimedRun, other_responses={204: None})
def claim_run(principal, request, workspace, name):
    """For agents of instance targets: the oldest queued run and a token for it, or 204 when none (or when
    the target's max_concurrent_runs are leased or running already)."""
    target = services().compute_targets.record(workspace, name)
    if target["type"] != "instance":
        raise Invalid(f"compute target {name!r} is of type {target['type']}: only instance targets hand runs "
                      "to agents", field="name")
    limit = (target.get("settings") or {}).get("max_concurrent_runs")
    claimed = services().instance_queue.claim(workspace, name, limit)
    if claimed is None:
        return Response(body="", status_code=204)
    run, token = claimed
    return {"run": run_view(run), "run_token": token}
