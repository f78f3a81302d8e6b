"""Source snapshots, content-addressed: file contents stored once per workspace by sha256, and a
manifest naming them whose own sha256 is the snapshot's id (docs/execution.md, "Snapshots").

The canonical manifest is `{"files":[{"digest","executable","path","size"},...]}` with files sorted by
path, keys sorted, no spaces and UTF-8 text (not \\u escapes).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib.errors import Invalid, NotFound, TooLarge
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.services.identity import Principal
from chalicelib.services.outputs import check_output_path
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.table import Check, ConditionFailed, Key, Put, attr_eq, item_absent

DIGEST = re.compile(r"[0-9a-f]{64}")
DEFAULT_MAX_FILES = 2000
DEFAULT_MAX_BYTES = 300 * 1024 * 1024
CONTENT = "snapshots/content/"  # under the workspace's blob prefix
LOOKUP_THREADS = 10  # botocore's default connection pool size: more threads would only queue


def limit(name: str, default: int) -> int:
    """A limit from the environment, read per call (Settings does not carry the snapshot limits)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {raw!r}")
    return value


def max_files() -> int:
    return limit("NIMBUS_SNAPSHOT_MAX_FILES", DEFAULT_MAX_FILES)


def max_bytes() -> int:
    return limit("NIMBUS_SNAPSHOT_MAX_BYTES", DEFAULT_MAX_BYTES)


def snapshot_key(workspace: str, snapshot_id: str) -> Key:
    return Key(table_keys.workspace_pk(workspace), f"SNAPSHOT#{snapshot_id}")


def manifest_bytes(files: list[dict]) -> bytes:
    ordered = sorted(files, key=lambda f: f["path"])
    return json.dumps({"files": ordered}, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


class Snapshots:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def upload_urls(self, workspace: str, files: Any) -> list[dict]:
        """Presigned PUT URLs for the contents the store lacks (or holds at another size), once each."""
        entries = _entries(files, ("digest", "size"), ())
        sizes: dict[str, int] = {}
        for index, entry in enumerate(entries):
            field = f"files[{index}]"
            digest, size = _digest(entry["digest"], field), _size(entry["size"], field)
            if sizes.setdefault(digest, size) != size:
                raise Invalid(f"{field}.size {size} differs from an earlier entry of the same digest",
                              field=f"{field}.size")
        _check_bytes(sum(sizes.values()))
        prefix = self._content_prefix(workspace)
        stored = self._stored_sizes(prefix, list(sizes))
        expires = self.ctx.settings.presign_seconds
        return [{"digest": d, "url": self.ctx.blobs.presign_put(prefix + d, expires)}
                for d, size in sizes.items() if stored[d] != size]

    def create(self, principal: Principal, workspace: str, files: Any) -> dict:
        """Register a manifest; the same files give the same id and the same answer every time."""
        checked = check_files(files)
        manifest = manifest_bytes(checked)
        snapshot_id = hashlib.sha256(manifest).hexdigest()
        key = snapshot_key(workspace, snapshot_id)
        existing = self.ctx.table.get_item(key)
        if existing is not None:
            return summary_view(existing)
        record = Workspaces(self.ctx).record(workspace)
        self._check_contents(record["blob_prefix"] + CONTENT, checked)
        # The manifest goes first, so every table item has its manifest.
        self.ctx.blobs.put_bytes(self._manifest_key(record, snapshot_id), manifest, "application/json")
        item = {"pk": key.pk, "sk": key.sk, "entity": "snapshot", "id": snapshot_id, "workspace": workspace,
                "file_count": len(checked), "total_bytes": sum(f["size"] for f in checked),
                "created": self.ctx.now(), "created_by": principal.user}
        # The check on the workspace's id keeps a snapshot out of a workspace deleted (or re-created) meanwhile.
        try:
            self.ctx.table.transact([Put(item, item_absent()),
                                     Check(table_keys.workspace(workspace), attr_eq("id", record["id"]))])
        except ConditionFailed as failure:
            if failure.index == 1:
                raise NotFound(f"workspace {workspace!r} not found") from None
            item = self.ctx.table.get_item(key) or item  # registered concurrently: answer with that one
        return summary_view(item)

    def get(self, workspace: str, snapshot_id: str) -> dict:
        item, files, _ = self._load(workspace, snapshot_id)
        return {**summary_view(item), "files": files}

    def stored_files(self, workspace: str, snapshot_id: str) -> list[tuple[str, str, int]]:
        """(path, blob key of its content, size) for each file: what a server-side consumer reads."""
        _, files, prefix = self._load(workspace, snapshot_id)
        return [(f["path"], prefix + f["digest"], f["size"]) for f in files]

    def download_urls(self, workspace: str, snapshot_id: str) -> dict:
        _, files, prefix = self._load(workspace, snapshot_id)
        expires = self.ctx.settings.presign_seconds
        return {"files": [{**f, "url": self.ctx.blobs.presign_get(prefix + f["digest"], expires)} for f in files]}

    # --- helpers -------------------------------------------------------------------------------
    def _load(self, workspace: str, snapshot_id: str) -> tuple[dict, list[dict], str]:
        """The table item, the manifest's files and the workspace's content prefix."""
        item = self.ctx.table.get_item(snapshot_key(workspace, snapshot_id)) if DIGEST.fullmatch(snapshot_id) else None
        if item is None:
            raise NotFound(f"snapshot {snapshot_id!r} not found in workspace {workspace!r}")
        record = Workspaces(self.ctx).record(workspace)
        files = json.loads(self.ctx.blobs.get_bytes(self._manifest_key(record, snapshot_id)))["files"]
        return item, files, record["blob_prefix"] + CONTENT

    def _content_prefix(self, workspace: str) -> str:
        return Workspaces(self.ctx).record(workspace)["blob_prefix"] + CONTENT

    @staticmethod
    def _manifest_key(record: dict, snapshot_id: str) -> str:
        return f"{record['blob_prefix']}snapshots/manifests/{snapshot_id}.json"

    def _stored_sizes(self, prefix: str, digests: list[str]) -> dict[str, int | None]:
        """The stored size of each content (None when absent), looked up in parallel: one HEAD each."""
        def size_of(digest: str) -> int | None:
            blob = self.ctx.blobs.find(prefix + digest)
            return None if blob is None else blob.size

        if len(digests) <= 1:
            return {d: size_of(d) for d in digests}
        with ThreadPoolExecutor(min(LOOKUP_THREADS, len(digests))) as pool:
            return dict(zip(digests, pool.map(size_of, digests)))

    def _check_contents(self, prefix: str, files: list[dict]) -> None:
        first: dict[str, int] = {}
        for index, f in enumerate(files):
            first.setdefault(f["digest"], index)
        stored = self._stored_sizes(prefix, list(first))
        bad = [(i, files[i], stored[d]) for d, i in first.items() if stored[d] != files[i]["size"]]
        if not bad:
            return
        index, f, size = bad[0]
        problem = "is not uploaded" if size is None else f"is stored with {size} bytes, not {f['size']}"
        raise Invalid(f"the content of files[{index}] ({f['path']!r}, digest {f['digest']}) {problem}; "
                      f"{len(bad)} content(s) missing or mismatched in all",
                      field=f"files[{index}].digest", details={"missing": [b[1]["digest"] for b in bad[:100]]})


def check_files(files: Any) -> list[dict]:
    """The validated manifest entries, in the request's order; errors name `files[i].<field>`."""
    entries = _entries(files, ("path", "digest", "size"), ("executable",))
    checked, seen = [], {}
    for index, entry in enumerate(entries):
        field = f"files[{index}]"
        path = check_path(entry["path"], f"{field}.path")
        if path in seen:
            raise Invalid(f"{field}.path {path!r} repeats files[{seen[path]}].path", field=f"{field}.path")
        seen[path] = index
        executable = entry.get("executable", False)
        if not isinstance(executable, bool):
            raise Invalid(f"{field}.executable must be true or false", field=f"{field}.executable")
        checked.append({"path": path, "digest": _digest(entry["digest"], field), "size": _size(entry["size"], field),
                        "executable": executable})
    _check_folders(checked, seen)
    _check_bytes(sum(f["size"] for f in checked))
    return checked


def check_path(path: Any, field: str) -> str:
    check_output_path(path, field)
    # Beyond the output rules: no DEL or C1 controls, and text the manifest can store as UTF-8.
    if any(unicodedata.category(c) == "Cc" for c in path) or not _utf8(path):
        raise Invalid(f"{field} {path!r} holds a control character or invalid text", field=field)
    return path


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry but UTF-8 cannot
        return False
    return True


def _check_folders(files: list[dict], index_of: dict[str, int]) -> None:
    """A path cannot be a file and also the folder of another file: the snapshot could not be written out."""
    for f in files:
        parts = f["path"].split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in index_of:
                i = index_of[folder]
                raise Invalid(f"files[{i}].path {folder!r} is a file and also the folder of {f['path']!r}",
                              field=f"files[{i}].path")


def _entries(files: Any, required: tuple[str, ...], optional: tuple[str, ...]) -> list[dict]:
    if not isinstance(files, list):
        raise Invalid("files must be a list", field="files")
    if len(files) > max_files():
        raise TooLarge(f"{len(files)} files exceed the limit of {max_files()} files per snapshot "
                       "(NIMBUS_SNAPSHOT_MAX_FILES)", field="files")
    for index, entry in enumerate(files):
        field = f"files[{index}]"
        if not isinstance(entry, dict):
            raise Invalid(f"{field} must be an object", field=field)
        for name in required:
            if name not in entry:
                raise Invalid(f"{field}.{name} is required", field=f"{field}.{name}")
        for name in entry:
            if name not in required + optional:
                raise Invalid(f"{field}.{name} is not a known field", field=f"{field}.{name}")
    return files


def _digest(value: Any, field: str) -> str:
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        raise Invalid(f"{field}.digest must be a sha256: 64 lowercase hex digits", field=f"{field}.digest")
    return value


def _size(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Invalid(f"{field}.size must be an integer of at least 0", field=f"{field}.size")
    return value


def _check_bytes(total: int) -> None:
    if total > max_bytes():
        raise TooLarge(f"{total} bytes exceed the limit of {max_bytes()} bytes per snapshot "
                       "(NIMBUS_SNAPSHOT_MAX_BYTES)", field="files")


def summary_view(item: dict) -> dict:
    return {"id": item["id"], "file_count": item["file_count"], "total_bytes": item["total_bytes"],
            "created": item["created"]}
