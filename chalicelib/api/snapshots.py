"""Snapshots: /v1/workspaces/{workspace}/snapshots[/uploads|/{snapshot_id}[/downloads]]."""
from typing import Any

from chalice import Blueprint

from chalicelib.api.service_locator import services
from chalicelib.api.models import Body
from chalicelib.api import responses as answer
from chalicelib.api.routing import api_route
from chalicelib.errors import Forbidden
from chalicelib.services.snapshots import Snapshots

bp = Blueprint(__name__)
SNAPSHOTS = "/v1/workspaces/{workspace}/snapshots"


class SnapshotFiles(Body):
    # Entries stay loosely typed: the service checks them and names the field as `files[i].path`.
    files: list[Any]


def snapshots() -> Snapshots:
    return Snapshots(services().ctx)


@api_route(bp, SNAPSHOTS + "/uploads", ("POST",), body=SnapshotFiles, role="contributor", response=answer.SnapshotUploads)
def upload_urls(principal, request, workspace, body):
    return {"uploads": snapshots().upload_urls(workspace, body.files)}


@api_route(bp, SNAPSHOTS, ("POST",), body=SnapshotFiles, role="contributor", status=201, response=answer.SnapshotSummary)
def create_snapshot(principal, request, workspace, body):
    return snapshots().create(principal, workspace, body.files)


@api_route(bp, SNAPSHOTS + "/{snapshot_id}", role="reader", response=answer.Snapshot)
def show_snapshot(principal, request, workspace, snapshot_id):
    return snapshots().get(workspace, snapshot_id)


@api_route(bp, SNAPSHOTS + "/{snapshot_id}/downloads", role="reader", run_token=True, response=answer.SnapshotDownloads)
def download_urls(principal, request, workspace, snapshot_id):
    """Readers, and the runner of a run made from this snapshot (with its run token)."""
    if principal.run_id is not None:
        if services().runs.get(workspace, principal.run_id).get("snapshot_id") != snapshot_id:
            raise Forbidden("a run token may download its own run's snapshot only")
    return snapshots().download_urls(workspace, snapshot_id)
