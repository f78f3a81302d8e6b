"""Datastores: /v1/workspaces/{workspace}/datastores[/{name}[/credentials|/files|/uploads…|/downloads]] and
…/default-datastore (docs/datasets.md, "Datastores")."""
from chalice import Blueprint

from chalicelib.api import responses as answer
from chalicelib.api.models import (
    CompleteUpload, DatastoreCredentials, DefaultDatastore, DownloadFromDatastore, MultipartUpload, PartUrls,
    RegisterDatastore, UploadToDatastore,
)
from chalicelib.api.routing import PAGE_TOKEN, QueryParam, api_route, max_results, query_int, query_str
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


# --- files: the bytes move between the client and the store, through presigned URLs ------------------
@api_route(bp, DATASTORE + "/files", role="reader", run_token=True, response=answer.OutputPage,
           query=(QueryParam("prefix", str, "only the files whose path starts so"), max_results(1000, 1000),
                  PAGE_TOKEN))
def list_datastore_files(principal, request, workspace, name):
    return services().datastore_files.list(workspace, name, query_str(request, "prefix") or "",
                                           query_int(request, "max_results", 1000, 1, 1000),
                                           query_str(request, "page_token"))


@api_route(bp, DATASTORE + "/uploads", ("POST",), body=UploadToDatastore, role="contributor", run_token=True,
           response=answer.DatastoreUploads)
def upload_to_datastore(principal, request, workspace, name, body):
    """A presigned PUT per file; a multipart upload for a big file on a store that has them."""
    files = [item.model_dump() for item in body.files]
    return services().datastore_files.upload(workspace, name, files, body.target_path, body.overwrite)


@api_route(bp, DATASTORE + "/uploads/parts", ("POST",), body=PartUrls, role="contributor", run_token=True,
           response=answer.PartUrlList)
def datastore_upload_parts(principal, request, workspace, name, body):
    return services().datastore_files.part_urls(workspace, name, body.path, body.upload_id, body.part_numbers)


@api_route(bp, DATASTORE + "/uploads/complete", ("POST",), body=CompleteUpload, role="contributor",
           run_token=True, response=answer.UploadCompleted)
def complete_datastore_upload(principal, request, workspace, name, body):
    parts = [part.model_dump() for part in body.parts]
    return services().datastore_files.complete(workspace, name, body.path, body.upload_id, parts)


@api_route(bp, DATASTORE + "/uploads/abort", ("POST",), body=MultipartUpload, role="contributor",
           run_token=True, response=answer.UploadAborted)
def abort_datastore_upload(principal, request, workspace, name, body):
    return services().datastore_files.abort(workspace, name, body.path, body.upload_id)


@api_route(bp, DATASTORE + "/downloads", ("POST",), body=DownloadFromDatastore, role="reader", run_token=True,
           response=answer.DatastoreDownloads)
def download_from_datastore(principal, request, workspace, name, body):
    return services().datastore_files.download(workspace, name, body.paths)
