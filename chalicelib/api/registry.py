"""The model registry: /v1/workspaces/{workspace}/models[/{name}[/uploads|/versions[/{version}[/files]]|/aliases]]."""
from chalice import Blueprint

from chalicelib.api.service_locator import services
from chalicelib.api.models import ModelUpload, RegisterModel, SetAlias, UpdateModelVersion
from chalicelib.api import responses as answer
from chalicelib.api.routing import (
    PAGE_TOKEN, QueryParam, api_route, max_results, query_bool, query_int, query_list, query_str,
)
from chalicelib.errors import Forbidden
from chalicelib.services.registry import Registry

bp = Blueprint(__name__)
MODELS = "/v1/workspaces/{workspace}/models"
MODEL = MODELS + "/{name}"
VERSION = MODEL + "/versions/{version}"


def registry() -> Registry:
    return services().registry


@api_route(bp, MODEL + "/uploads", ("POST",), body=ModelUpload, role="contributor", response=answer.ModelUploads)
def upload_urls(principal, request, workspace, name, body):
    return registry().upload_urls(workspace, name, body.files)


@api_route(bp, MODEL + "/versions", ("POST",), body=RegisterModel, role="contributor", status=201, run_token=True,
           response=answer.ModelVersion)
def register(principal, request, workspace, name, body):
    """A run token may register its own run's files (Run.register_model inside a submitted script)."""
    if principal.run_id is not None and not (
            body.run_id and services().runs.descends_from(workspace, body.run_id, principal.run_id)):
        raise Forbidden(f"a run token may register only its own run's files (run {principal.run_id})")
    return registry().register(principal, workspace, name, upload_id=body.upload_id, run_id=body.run_id,
                               path=body.path, description=body.description, tags=body.tags,
                               properties=body.properties, framework=body.framework,
                               framework_version=body.framework_version)


@api_route(bp, MODELS, role="reader",
           response=answer.ModelPage,
           query=(QueryParam("name", str, "only this model"), QueryParam("tag", list, "k or k=v; repeat to require several"),
                  QueryParam("all_versions", bool, "every version, not only the latest"), max_results(100, 1000), PAGE_TOKEN))
def list_models(principal, request, workspace):
    return registry().list_models(workspace, name=query_str(request, "name"), tags=query_list(request, "tag"),
                                  all_versions=query_bool(request, "all_versions"),
                                  max_results=query_int(request, "max_results", 100, 1, 1000),
                                  page_token=query_str(request, "page_token"))


@api_route(bp, MODEL, role="reader", response=answer.Model)
def show_model(principal, request, workspace, name):
    return registry().get_model(workspace, name)


@api_route(bp, MODEL + "/versions", role="reader",
           response=answer.ModelVersionPage, query=(max_results(100, 1000), PAGE_TOKEN))
def list_versions(principal, request, workspace, name):
    return registry().list_versions(workspace, name, query_int(request, "max_results", 100, 1, 1000),
                                    query_str(request, "page_token"))


@api_route(bp, VERSION, role="reader", run_token=True, response=answer.ModelVersion)
def show_version(principal, request, workspace, name, version):
    return registry().get_version(workspace, name, version)


@api_route(bp, VERSION + "/files", role="reader", run_token=True, response=answer.ModelFiles)
def download_urls(principal, request, workspace, name, version):
    return registry().download_urls(workspace, name, version)


@api_route(bp, VERSION, ("PATCH",), body=UpdateModelVersion, role="contributor", response=answer.ModelVersion)
def update_version(principal, request, workspace, name, version, body):
    return registry().update_version(workspace, name, version, tags=body.tags, remove_tags=body.remove_tags,
                                     properties=body.properties, description=body.description)


@api_route(bp, VERSION, ("DELETE",), role="contributor", response=answer.ModelVersionDeleted)
def delete_version(principal, request, workspace, name, version):
    return registry().delete_version(principal, workspace, name, version)


@api_route(bp, MODEL + "/aliases", role="reader", response=answer.AliasList)
def list_aliases(principal, request, workspace, name):
    return registry().aliases(workspace, name)


@api_route(bp, MODEL + "/aliases/{alias}", ("PUT",), body=SetAlias, role="contributor", response=answer.AliasSet)
def set_alias(principal, request, workspace, name, alias, body):
    return registry().set_alias(principal, workspace, name, alias, body.version)


@api_route(bp, MODEL + "/aliases/{alias}", ("DELETE",), role="contributor", response=answer.AliasDeleted)
def delete_alias(principal, request, workspace, name, alias):
    return registry().delete_alias(principal, workspace, name, alias)
