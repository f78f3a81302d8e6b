"""Versioned environments: /v1/workspaces/{workspace}/environments[/{name}/versions[/{version}]]."""
from chalice import Blueprint

from chalicelib.api.service_locator import services
from chalicelib.api.models import EnvironmentDefinition
from chalicelib.api import responses as answer
from chalicelib.api.routing import api_route, json_response
from chalicelib.services.environments import Environments

bp = Blueprint(__name__)
ENVIRONMENTS = "/v1/workspaces/{workspace}/environments"
VERSIONS = ENVIRONMENTS + "/{name}/versions"
VERSION = VERSIONS + "/{version}"


def environments() -> Environments:
    return services().environments


def _definition(body: EnvironmentDefinition) -> dict:
    return {"python": body.python, "pip": body.pip, "variables": body.variables, "base_image": body.base_image}


@api_route(bp, VERSIONS, ("POST",), body=EnvironmentDefinition, role="contributor", status=201,
           response=answer.EnvironmentVersion, other_responses={200: answer.EnvironmentVersion})
def create_version(principal, request, workspace, name, body):
    """201 with the next version; 200 with the latest one when its definition is the same."""
    version, created = environments().create(principal, workspace, name, **_definition(body))
    return version if created else json_response(version, 200)


@api_route(bp, ENVIRONMENTS, role="reader", response=answer.EnvironmentList)
def list_environments(principal, request, workspace):
    return environments().list(workspace)


@api_route(bp, VERSION, role="reader", run_token=True, response=answer.EnvironmentVersion)
def show_version(principal, request, workspace, name, version):
    """A run token may read it: the runner prepares its run's environment from it."""
    return environments().get(workspace, name, version)


@api_route(bp, VERSION, ("PUT",), body=EnvironmentDefinition, role="contributor", response=answer.EnvironmentVersion)
def replace_version(principal, request, workspace, name, version, body):
    return environments().replace(principal, workspace, name, version, **_definition(body))
