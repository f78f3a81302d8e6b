"""A run's output files and logged images: blobs under the run's prefix, moved with presigned URLs."""
from __future__ import annotations

import posixpath

from chalicelib.errors import Invalid, NotFound
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.domain.validation import check_page_size, decode_page_token, encode_page_token
from chalicelib.services.runs import Runs
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.blobs import check_key
from nimbus.naming import path_problem

MAX_FILES_PER_REQUEST = 500

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "svg", "gif")


def check_output_path(path: str, field: str = "path") -> str:
    """A user's file path (outputs, model files, snapshots) under the one name policy (nimbus/naming.py)."""
    problem = path_problem(path)
    if problem is not None:
        raise Invalid(f"{field} {path!r} {problem} (docs/api.md, Names)", field=field)
    if posixpath.normpath(path) != path:
        raise Invalid(f"{field} {path!r} is not a normalised path", field=field)
    return path


class Outputs:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def run_prefix(self, workspace: str, run_id: str) -> str:
        Runs(self.ctx).get(workspace, run_id)
        return f"{Workspaces(self.ctx).record(workspace)['blob_prefix']}runs/{run_id}/"

    def upload_urls(self, workspace: str, run_id: str, paths: list[str]) -> list[dict]:
        if not isinstance(paths, list) or not 1 <= len(paths) <= MAX_FILES_PER_REQUEST:
            raise Invalid(f"paths must list 1-{MAX_FILES_PER_REQUEST} files", field="paths")
        for index, path in enumerate(paths):
            check_output_path(path, f"paths[{index}]")
        prefix = self.run_prefix(workspace, run_id)
        expires = self.ctx.settings.presign_seconds
        return [{"path": p, "url": self.ctx.blobs.presign_put(check_key(prefix + "outputs/" + p), expires)} for p in paths]

    def image_upload(self, workspace: str, run_id: str, name: str, extension: str = "png") -> dict:
        if extension not in IMAGE_EXTENSIONS:
            raise Invalid("extension must be png, jpg, jpeg, svg or gif", field="extension")
        path = f"images/{new_id(self.ctx.clock)}.{extension}"
        key = self.run_prefix(workspace, run_id) + path
        return {"path": path, "url": self.ctx.blobs.presign_put(key, self.ctx.settings.presign_seconds)}

    def image_url(self, workspace: str, run_id: str, path: str) -> dict:
        if not path.startswith("images/"):
            raise Invalid("path must name a logged image (images/…)", field="path")
        key = self.run_prefix(workspace, run_id) + check_output_path(path)
        if self.ctx.blobs.find(key) is None:
            raise NotFound(f"image {path!r} not found")
        return {"path": path, "url": self.ctx.blobs.presign_get(key, self.ctx.settings.presign_seconds)}

    def list(self, workspace: str, run_id: str, prefix: str = "", max_results: int = 1000,
             page_token: str | None = None) -> dict:
        check_page_size(max_results)
        if prefix:
            check_output_path(prefix.rstrip("/"), "prefix")
        base = self.run_prefix(workspace, run_id) + "outputs/"
        state = decode_page_token(page_token) or {}
        after = state.get("a")
        if after is not None and (not isinstance(after, str) or not after.startswith(base)):
            raise Invalid("page_token does not belong to this listing", field="page_token")
        page = self.ctx.blobs.list(base + prefix, start_after=after, limit=max_results)
        files = [{"path": b.key[len(base):], "size": b.size, "modified": b.modified} for b in page.blobs]
        return {"files": files, "next_page_token": encode_page_token({"a": page.next}) if page.next else None}

    def download_url(self, workspace: str, run_id: str, path: str) -> dict:
        key = self.run_prefix(workspace, run_id) + "outputs/" + check_output_path(path)
        blob = self.ctx.blobs.find(key)
        if blob is None:
            raise NotFound(f"output {path!r} not found in run {run_id}")
        return {"path": path, "size": blob.size, "url": self.ctx.blobs.presign_get(key, self.ctx.settings.presign_seconds)}
