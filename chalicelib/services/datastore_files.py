"""A datastore's files: listed by the service, moved by the client straight to and from the store.

The service never carries file bytes: an upload gets presigned PUTs (and, on stores that have them,
multipart uploads for files above MULTIPART_FROM, whose parts' URLs are asked for a batch at a time,
just before they are sent), a download presigned GETs. A path is relative to the datastore's root: its prefix on S3, its folder locally, or
`datastore/` under the workspace's prefix of the platform's blob store for `workspaceblobstore`.
URLs for an s3 datastore with keys are signed with those keys, so they reach the user's store itself.
"""
from __future__ import annotations

import math

from chalicelib.domain.context import Context
from chalicelib.domain.validation import check_page_size, decode_page_token, encode_page_token
from chalicelib.errors import Invalid, NotFound
from chalicelib.services.datastores import DatastoreAccess, Datastores
from chalicelib.services.outputs import MAX_FILES_PER_REQUEST, check_output_path
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.blobs import MAX_SINGLE_UPLOAD, Blobs

MULTIPART_FROM = 64 * 1024 ** 2
PART_SIZE = 64 * 1024 ** 2
MAX_PARTS = 10_000  # S3's ceiling
MAX_FILE = 5 * 1024 ** 4  # S3's largest object
BUILTIN_FOLDER = "datastore/"


class DatastoreFiles:
    def __init__(self, ctx: Context, datastores: Datastores, access: DatastoreAccess | None):
        self.ctx = ctx
        self.datastores = datastores
        self.access = access

    # --- uploads --------------------------------------------------------------------------------
    def upload(self, workspace: str, name: str, files: list, target_path: str = "", overwrite: bool = False) -> dict:
        """Presigned uploads for `files` ([{path, size}]) under `target_path`. Without `overwrite`, a
        file the datastore already holds is skipped (listed in `skipped`), as in Azure ML."""
        target = _folder(target_path, "target_path")
        if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES_PER_REQUEST:
            raise Invalid(f"files must list 1-{MAX_FILES_PER_REQUEST} files", field="files")
        wanted = []
        for index, entry in enumerate(files):
            if not isinstance(entry, dict):
                raise Invalid(f"files[{index}] must be an object with path and size", field=f"files[{index}]")
            path = check_output_path(entry.get("path") if isinstance(entry.get("path"), str) else "",
                                     f"files[{index}].path")
            size = entry.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE:
                raise Invalid(f"files[{index}].size must be a byte count from 0 to 5 TiB", field=f"files[{index}].size")
            wanted.append((target + path, size, index))
        blobs, base = self.open(workspace, name)
        for path, size, index in wanted:
            if size > MAX_SINGLE_UPLOAD and not blobs.multipart:
                raise Invalid(f"files[{index}].size: this datastore takes files of at most 5 GiB",
                              field=f"files[{index}].size")
        expires = self.ctx.settings.presign_seconds
        uploads, skipped = [], []
        for path, size, _ in wanted:
            key = base + path
            if not overwrite and blobs.find(key) is not None:
                skipped.append(path)
            elif size > MULTIPART_FROM and blobs.multipart:
                uploads.append({"path": path, "size": size, **self._multipart(blobs, key, size)})
            else:
                uploads.append({"path": path, "size": size, "url": blobs.presign_put(key, expires)})
        return {"uploads": uploads, "skipped": skipped}

    def part_urls(self, workspace: str, name: str, path: str, upload_id: str, numbers: list) -> dict:
        """Presigned PUTs for parts of a multipart upload, signed just before they are sent (they expire)."""
        check_output_path(path if isinstance(path, str) else "", "path")
        _check_upload_id(upload_id)
        if not isinstance(numbers, list) or not 1 <= len(numbers) <= MAX_FILES_PER_REQUEST:
            raise Invalid(f"part_numbers must list 1-{MAX_FILES_PER_REQUEST} parts", field="part_numbers")
        for index, number in enumerate(numbers):
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_PARTS:
                raise Invalid(f"part_numbers[{index}] must be from 1 to {MAX_PARTS}", field=f"part_numbers[{index}]")
        blobs, base = self.open(workspace, name)
        expires = self.ctx.settings.presign_seconds
        return {"parts": [{"part_number": n, "url": blobs.presign_part(base + path, upload_id, n, expires)}
                          for n in numbers]}

    def complete(self, workspace: str, name: str, path: str, upload_id: str, parts: list) -> dict:
        """Joins a multipart upload's parts ([{part_number, etag}], in order): the file appears now."""
        check_output_path(path if isinstance(path, str) else "", "path")
        _check_upload_id(upload_id)
        if not isinstance(parts, list) or not 1 <= len(parts) <= MAX_PARTS:
            raise Invalid(f"parts must list 1-{MAX_PARTS} parts", field="parts")
        listed = []
        for index, part in enumerate(parts):
            number, etag = (part.get("part_number"), part.get("etag")) if isinstance(part, dict) else (None, None)
            if isinstance(number, bool) or not isinstance(number, int) or number != index + 1:
                raise Invalid(f"parts[{index}].part_number must be {index + 1}: every part, in order",
                              field=f"parts[{index}].part_number")
            if not isinstance(etag, str) or not etag or len(etag) > 200:
                raise Invalid(f"parts[{index}].etag must be the ETag the store answered for the part",
                              field=f"parts[{index}].etag")
            listed.append((number, etag))
        blobs, base = self.open(workspace, name)
        blobs.complete_multipart(base + path, upload_id, listed)
        found = blobs.find(base + path)
        return {"path": path, "size": found.size if found else None}

    def abort(self, workspace: str, name: str, path: str, upload_id: str) -> dict:
        check_output_path(path if isinstance(path, str) else "", "path")
        _check_upload_id(upload_id)
        blobs, base = self.open(workspace, name)
        blobs.abort_multipart(base + path, upload_id)
        return {"path": path, "aborted": True}

    # --- listing and downloads ------------------------------------------------------------------
    def list(self, workspace: str, name: str, prefix: str = "", max_results: int = 1000,
             page_token: str | None = None) -> dict:
        """Files under `prefix` (a folder, or the start of a name), in path order: [{path, size, modified}]."""
        check_page_size(max_results)
        if prefix:
            check_output_path(prefix.rstrip("/"), "prefix")
        blobs, base = self.open(workspace, name)
        state = decode_page_token(page_token) or {}
        after = state.get("a")
        if after is not None and (not isinstance(after, str) or not after.startswith(base)):
            raise Invalid("page_token does not belong to this listing", field="page_token")
        page = blobs.list(base + prefix, start_after=after, limit=max_results)
        files = [{"path": b.key[len(base):], "size": b.size, "modified": b.modified} for b in page.blobs]
        return {"files": files, "next_page_token": encode_page_token({"a": page.next}) if page.next else None}

    def download(self, workspace: str, name: str, paths: list) -> dict:
        """Presigned GETs for files the datastore holds; a missing one is a 404 naming it."""
        if not isinstance(paths, list) or not 1 <= len(paths) <= MAX_FILES_PER_REQUEST:
            raise Invalid(f"paths must list 1-{MAX_FILES_PER_REQUEST} files", field="paths")
        checked = [check_output_path(p if isinstance(p, str) else "", f"paths[{i}]") for i, p in enumerate(paths)]
        blobs, base = self.open(workspace, name)
        expires = self.ctx.settings.presign_seconds
        downloads = []
        for path in checked:
            found = blobs.find(base + path)
            if found is None:
                raise NotFound(f"datastore {name!r} holds no file {path!r}", field="paths")
            downloads.append({"path": path, "size": found.size, "url": blobs.presign_get(base + path, expires)})
        return {"downloads": downloads}

    # --- helpers --------------------------------------------------------------------------------
    def open(self, workspace: str, name: str) -> tuple[Blobs, str]:
        """The store behind the datastore, and the key prefix of its root."""
        item = self.datastores.record(workspace, name)
        if item["type"] == "blob":
            return self.ctx.blobs, Workspaces(self.ctx).record(workspace)["blob_prefix"] + BUILTIN_FOLDER
        if self.access is None:
            raise Invalid("this deployment reaches no external stores", field="name")
        settings = item["settings"]
        folder = settings["prefix"] if item["type"] == "s3" else settings["path"]
        blobs = self.access.open({"type": item["type"], "settings": settings},
                                 self.datastores.credentials(workspace, item))
        return blobs, f"{folder}/" if folder else ""

    @staticmethod
    def _multipart(blobs: Blobs, key: str, size: int) -> dict:
        """A started multipart upload; its parts' URLs come from part_urls, a batch at a time."""
        part_size = max(PART_SIZE, math.ceil(size / MAX_PARTS / 2**20) * 2**20)
        return {"upload_id": blobs.start_multipart(key), "part_size": part_size,
                "part_count": math.ceil(size / part_size)}


def _check_upload_id(upload_id) -> None:
    if not isinstance(upload_id, str) or not 0 < len(upload_id) <= 1024:
        raise Invalid("upload_id must name a multipart upload", field="upload_id")


def _folder(path: str | None, field: str) -> str:
    """'' or a relative folder with its trailing '/'."""
    if path is None or path in ("", "/", "."):
        return ""
    if not isinstance(path, str):
        raise Invalid(f"{field} must be a string", field=field)
    return check_output_path(path.strip("/"), field) + "/"
