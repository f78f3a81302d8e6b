"""Datasets: /v1/workspaces/{workspace}/datasets[/{name}/versions[/{version}[/files|/downloads|/verification|/runs]]]
(docs/datasets.md, "Datasets"). `{version}` is a number or `latest`."""
from chalice import Blueprint

from chalicelib.api import responses as answer
from chalicelib.api.models import DatasetFiles, RegisterDataset
from chalicelib.api.routing import PAGE_TOKEN, api_route, max_results, query_int, query_str
from chalicelib.api.service_locator import services

bp = Blueprint(__name__)
DATASETS = "/v1/workspaces/{workspace}/datasets"
VERSIONS = DATASETS + "/{name}/versions"
VERSION = VERSIONS + "/{version}"


@api_route(bp, DATASETS, ("POST",), body=RegisterDataset, role="contributor", run_token=True, status=201,
           response=answer.DatasetVersion)
def register_dataset(principal, request, workspace, body):
    """Lists the paths and fingerprints the listing; a tabular dataset is also read and profiled. The same
    definition over unchanged data answers its version (`existing: true`)."""
    paths = [p.model_dump() for p in body.paths]
    return services().datasets.register(principal, workspace, body.name, body.type, paths, body.format,
                                        body.options, body.description, body.tags, body.create_new_version)


@api_route(bp, DATASETS, role="reader", run_token=True, response=answer.DatasetList)
def list_datasets(principal, request, workspace):
    return {"datasets": services().datasets.list(workspace)}


@api_route(bp, VERSIONS, role="reader", run_token=True, response=answer.DatasetVersionList)
def list_dataset_versions(principal, request, workspace, name):
    return {"versions": services().datasets.versions(workspace, name)}


@api_route(bp, VERSION, role="reader", run_token=True, response=answer.DatasetVersion)
def show_dataset_version(principal, request, workspace, name, version):
    return services().datasets.get(workspace, name, version)


@api_route(bp, VERSION + "/files", role="reader", run_token=True, response=answer.DatasetFilePage,
           query=(max_results(1000, 1000), PAGE_TOKEN))
def list_dataset_files(principal, request, workspace, name, version):
    return services().datasets.files(workspace, name, version, query_int(request, "max_results", 1000, 1, 1000),
                                     query_str(request, "page_token"))


@api_route(bp, VERSION + "/downloads", ("POST",), body=DatasetFiles, role="reader", run_token=True,
           response=answer.DatasetDownloads)
def download_dataset_files(principal, request, workspace, name, version, body):
    return services().datasets.download(workspace, name, version, [f.model_dump() for f in body.files])


@api_route(bp, VERSION + "/verification", role="reader", run_token=True, response=answer.DatasetVerification)
def verify_dataset_version(principal, request, workspace, name, version):
    """Lists the data again and compares it with the version's fingerprint."""
    return services().datasets.verify(workspace, name, version)


@api_route(bp, VERSION + "/runs", role="reader", run_token=True, response=answer.DatasetRuns)
def list_dataset_runs(principal, request, workspace, name, version):
    """The runs that read the version (its lineage): one Query."""
    return {"runs": services().datasets.runs(workspace, name, version)}


@api_route(bp, VERSION, ("DELETE",), role="contributor", response=answer.DatasetVersionDeleted)
def delete_dataset_version(principal, request, workspace, name, version):
    """Unregisters the version; its data stays where it is."""
    return services().datasets.delete_version(principal, workspace, name, version)


@api_route(bp, "/v1/workspaces/{workspace}/runs/{run_id}/datasets", role="reader", run_token=True,
           response=answer.RunDatasets)
def list_run_datasets(principal, request, workspace, run_id):
    """The dataset versions a run read and those it wrote (its lineage)."""
    return services().datasets.of_run(workspace, run_id)
