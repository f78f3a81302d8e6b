"""Where a model version's files come from: an upload through presigned URLs, or a server-side copy of a
run's stored files (docs/models-and-endpoints.md).

Either way a version's files live under their own blob prefix, `<ws prefix>models/files/<folder>/`, where
the folder is the upload's id or, for a copy, a fresh id. An upload's announced file list waits in
`<ws prefix>models/uploads/<upload_id>.json` until a version is registered from it.
"""
from __future__ import annotations

import json
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from chalicelib.errors import Invalid, NotFound, TooLarge
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.services.outputs import check_output_path
from chalicelib.services.registry_input import MAX_FILES, check_file_list, check_model_name, check_upload_files
from chalicelib.services.runs import Runs
from chalicelib.services.workspaces import Workspaces

UPLOAD_ID = re.compile(r"[0-9a-f]{22}")
COPY_THREADS = 10
UPLOADS = "models/uploads/"  # `<upload_id>.json`: the files an upload announced, until registered
FILES = "models/files/"


def files_prefix(record: dict, folder: str) -> str:
    """The blob prefix of a version's files, given its workspace's record and its folder."""
    return f"{record['blob_prefix']}{FILES}{folder}/"


class ModelFileSources:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def upload_urls(self, workspace: str, name: str, files: Any) -> dict:
        """Presigned PUTs for a new version's files; the upload's file list is kept until it is registered."""
        check_model_name(name)
        checked = check_upload_files(files)
        prefix = Workspaces(self.ctx).record(workspace)["blob_prefix"]
        upload_id = new_id(self.ctx.clock)
        manifest = json.dumps({"name": name, "files": checked}, separators=(",", ":")).encode()
        self.ctx.blobs.put_bytes(f"{prefix}{UPLOADS}{upload_id}.json", manifest, "application/json")
        base, expires = f"{prefix}{FILES}{upload_id}/", self.ctx.settings.presign_seconds
        return {"upload_id": upload_id,
                "files": [{"path": f["path"], "url": self.ctx.blobs.presign_put(base + f["path"], expires)}
                          for f in checked]}

    def from_upload(self, record: dict, name: str, upload_id: Any) -> list[dict]:
        """The files of an upload made for model `name`, once every one is stored at its announced size."""
        if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
            raise Invalid("upload_id must be the id an upload request answered", field="upload_id")
        try:
            manifest = json.loads(self.ctx.blobs.get_bytes(f"{record['blob_prefix']}{UPLOADS}{upload_id}.json"))
        except NotFound:
            raise Invalid(f"upload {upload_id} is unknown or already registered; ask for upload URLs first",
                          field="upload_id") from None
        if manifest["name"] != name:
            raise Invalid(f"upload {upload_id} was made for model {manifest['name']!r}, not {name!r}",
                          field="upload_id")
        base = files_prefix(record, upload_id)
        stored = _parallel(lambda f: self.ctx.blobs.find(base + f["path"]), manifest["files"])
        bad = [f["path"] for f, blob in zip(manifest["files"], stored) if blob is None or blob.size != f["size"]]
        if bad:
            shown = ", ".join(repr(p) for p in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise Invalid(f"{len(bad)} file(s) of upload {upload_id} are missing or of another size: {shown}",
                          field="upload_id", details={"missing": bad[:100]})
        return manifest["files"]

    def spend_upload(self, record: dict, upload_id: str) -> None:
        """Forgets a registered upload, so a second version cannot share (and later delete) its files."""
        self.ctx.blobs.delete(f"{record['blob_prefix']}{UPLOADS}{upload_id}.json")

    def from_run(self, record: dict, workspace: str, run_id: Any, path: Any, folder: str
                 ) -> tuple[list[dict], dict]:
        """Copies a run's file, or every file under a run's folder, into the new version's folder; answers
        (files, lineage).

        `path` is a file name as the run lists it (`outputs/model.pkl`); the run's stored files sit under
        `<ws prefix>runs/<run_id>/outputs/`, whatever their names."""
        if not isinstance(run_id, str):
            raise Invalid("run_id must be a run id", field="run_id")
        try:
            run = Runs(self.ctx).get(workspace, run_id)
        except NotFound:
            raise Invalid(f"run {run_id!r} not found in workspace {workspace!r}", field="run_id") from None
        check_output_path(path, "path")
        source = f"{record['blob_prefix']}runs/{run_id}/outputs/"
        leaf = posixpath.basename(path)
        single = self.ctx.blobs.find(source + path)
        if single is not None:
            pairs = [(single.key, leaf, single.size)]
        else:
            pairs = []
            for blob in self.ctx.blobs.list_all(source + path + "/"):
                pairs.append((blob.key, f"{leaf}/{blob.key[len(source + path) + 1:]}", blob.size))
                if len(pairs) > MAX_FILES:
                    raise TooLarge(f"{path!r} holds more than {MAX_FILES} files, the most a version holds",
                                   field="path")
        if not pairs:
            raise Invalid(f"run {run_id} has no file or folder {path!r} (see the run's file names)",
                          field="path")
        files = [{"path": rel, "size": size} for _, rel, size in pairs]
        check_file_list(files, "path")
        target = files_prefix(record, folder)
        _parallel(lambda pair: self.ctx.blobs.copy(pair[0], target + pair[1]), pairs)
        lineage = {"run_id": run_id, "experiment": run["experiment"], "snapshot_id": run.get("snapshot_id")}
        inputs = (run.get("run_config") or {}).get("inputs") or []
        if inputs:  # the dataset versions the run read: the model's lineage reaches its data
            lineage["datasets"] = [{"name": i["dataset"], "version": i["version"], "fingerprint": i["fingerprint"],
                                    "input": i["name"]} for i in inputs]
        git = {out: (run.get("git") or {}).get(name) for out, name in
               (("commit", "commit"), ("branch", "branch"), ("repository", "remote"))}
        if any(git.values()):
            lineage["git"] = {k: v for k, v in git.items() if v}
        return files, lineage


def _parallel(task: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
    if len(jobs) <= 1:
        return [task(job) for job in jobs]
    with ThreadPoolExecutor(min(COPY_THREADS, len(jobs))) as pool:
        return list(pool.map(task, jobs))
