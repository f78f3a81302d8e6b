"""Endpoints and deployments: /v1/workspaces/{workspace}/endpoints[/{endpoint}[/deployments/{deployment}]].

The scoring route takes an endpoint key, never a user token, and answers with what the entry script's
run() returned.
"""
from chalice import Blueprint, Response

from chalicelib.api.service_locator import services
from chalicelib.api.models import Deploy, RegenerateKey, SetTraffic
from chalicelib.api import responses as answer
from chalicelib.api.routing import MAX_BODY, QueryParam, api_route, json_response, query_int
from chalicelib.errors import TooLarge
from chalicelib.hosting.port import DeploymentConfig
from chalicelib.services.deployment_lifecycle import ROLLING_OUT

bp = Blueprint(__name__)
BASE = "/v1/workspaces/{workspace}/endpoints"
SCORING_CONTENT_TYPES = ("application/json", "text/plain", "text/csv", "application/octet-stream")


@api_route(bp, BASE + "/{endpoint}/deployments/{deployment}", ("PUT",), body=Deploy, role="contributor",
           response=answer.Deployment, other_responses={202: answer.Deployment})
def deploy(principal, request, workspace, endpoint, deployment, body: Deploy):
    """200 with the deployment once it is Succeeded or Failed; 202 while it is Creating or Updating (GET the
    deployment until it is settled: each look takes it further)."""
    view = services().deployments.deploy(
        principal, workspace, endpoint, deployment, body.models, body.snapshot_id, body.entry_script,
        body.environment, DeploymentConfig(**body.config.model_dump()))
    return json_response(view, 202) if view["state"] in ROLLING_OUT else view


@api_route(bp, BASE, role="reader", response=answer.EndpointList)
def list_endpoints(principal, request, workspace):
    return services().deployments.list_endpoints(workspace)


@api_route(bp, BASE + "/{endpoint}", role="reader", response=answer.Endpoint)
def show_endpoint(principal, request, workspace, endpoint):
    return services().deployments.get_endpoint(workspace, endpoint)


@api_route(bp, BASE + "/{endpoint}", ("DELETE",), role="contributor", response=answer.EndpointDeleted)
def delete_endpoint(principal, request, workspace, endpoint):
    return services().deployments.delete_endpoint(workspace, endpoint, by=principal)


@api_route(bp, BASE + "/{endpoint}/deployments/{deployment}", role="reader", response=answer.Deployment)
def show_deployment(principal, request, workspace, endpoint, deployment):
    return services().deployments.get_deployment(workspace, endpoint, deployment)


@api_route(bp, BASE + "/{endpoint}/deployments/{deployment}", ("DELETE",), role="contributor",
           response=answer.DeploymentDeleted)
def delete_deployment(principal, request, workspace, endpoint, deployment):
    return services().deployments.delete_deployment(workspace, endpoint, deployment, by=principal)


@api_route(bp, BASE + "/{endpoint}/deployments/{deployment}/logs", role="reader",
           response=answer.DeploymentLogs,
           query=(QueryParam("tail", int, "how many of the last lines", 200, 1, 10_000),))
def deployment_logs(principal, request, workspace, endpoint, deployment):
    return services().deployments.logs(workspace, endpoint, deployment, query_int(request, "tail", 200, 1, 10_000))


@api_route(bp, BASE + "/{endpoint}/traffic", ("PUT",), body=SetTraffic, role="contributor", response=answer.Endpoint)
def set_traffic(principal, request, workspace, endpoint, body: SetTraffic):
    return services().deployments.set_traffic(workspace, endpoint, body.traffic, by=principal)


@api_route(bp, BASE + "/{endpoint}/keys", role="contributor", response=answer.EndpointKeys)
def get_keys(principal, request, workspace, endpoint):
    return services().deployments.get_keys(workspace, endpoint)


@api_route(bp, BASE + "/{endpoint}/keys/regenerate", ("POST",), body=RegenerateKey, role="contributor",
           response=answer.EndpointKeys)
def regenerate_key(principal, request, workspace, endpoint, body: RegenerateKey):
    return services().deployments.regenerate_key(workspace, endpoint, body.key, by=principal)


@api_route(bp, BASE + "/{endpoint}/telemetry", role="reader",
           response=answer.Telemetry,
           query=(QueryParam("minutes", int, "the window, up to now", 60, 1, 43_200),))
def telemetry(principal, request, workspace, endpoint):
    services().deployments.get_endpoint(workspace, endpoint)  # 404 for an unknown endpoint
    return services().telemetry.summary(workspace, endpoint, query_int(request, "minutes", 60, 1, 43_200))


@api_route(bp, BASE + "/{endpoint}/score", ("POST",), auth=False, endpoint_key=True,
           content_types=SCORING_CONTENT_TYPES, response=answer.ScoringAnswer)
def score(principal, request, workspace, endpoint):
    raw = request.raw_body or b""
    if len(raw) > MAX_BODY:
        raise TooLarge(f"request body exceeds {MAX_BODY} bytes (the Lambda payload limit)", field="body")
    result = services().deployments.score(workspace, endpoint, request.headers.get("authorization"), raw,
                                          request.headers.get("content-type", "application/json"))
    headers = {"Content-Type": result.content_type}
    if result.deployment:
        headers["X-Nimbus-Deployment"] = result.deployment
    # Scoring answers are JSON text (the runtime encodes them): an API Gateway body is a string.
    return Response(body=result.body.decode("utf-8", "replace"), status_code=result.status, headers=headers)
