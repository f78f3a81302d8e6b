"""Datasets: versioned references to data on datastores, with a copy of its metadata (docs/datasets.md).

A version records its definition (paths on datastores; for tabular data the format and reading options),
the files they matched with their sizes and tags, and a fingerprint of that listing. A tabular version
also keeps the data's schema, row count, first rows and column profile. The data itself is never copied.

Versions are numbered as the model registry numbers them: the dataset's counter moves from n to n + 1
only if it still reads n, so concurrent registrations get consecutive versions. A definition registered
again over unchanged data (the same fingerprint) answers the version it became, through an identity item
written in the same transaction. Each version counts as a reference on the datastores it reads
(`dataset_versions`), which keeps those datastores from being deleted under it.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from chalicelib.domain import table_keys
from chalicelib.domain.contention import contention_pause
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.domain.validation import check_name, check_page_size, decode_page_token, encode_page_token
from chalicelib.errors import Conflict, Invalid, NotFound, Unavailable
from chalicelib.services.audit import Audit
from chalicelib.services.datastore_files import DatastoreFiles
from chalicelib.services.datastores import DEFAULT_NAME as BUILTIN_DATASTORE
from chalicelib.services.dataset_sources import SourceFile, check_paths, fingerprint, matching_files
from chalicelib.services.identity import Principal
from chalicelib.services.outputs import MAX_FILES_PER_REQUEST, check_output_path
from chalicelib.services.registry_input import check_text, version_entries
from chalicelib.services.runs import Runs
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.table import (
    Check, ConditionFailed, Delete, Key, Operation, Put, Query, Update, attr_absent, attr_eq, attr_gt, item_absent,
    item_exists,
)

TYPES = ("file", "tabular")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
NAME_RULE = "1-255 characters: letters, digits, '_', '.' and '-', starting with a letter or digit"
MAX_TABULAR_BYTES = 2 * 1024 ** 3  # read whole at registration, to profile it
REGISTER_ATTEMPTS = 200


def check_dataset_name(name: Any, field: str = "name") -> str:
    return check_name(name, NAME, field, NAME_RULE)


def version_view(item: dict, details: dict | None = None) -> dict:
    view = {key: item.get(key) for key in (
        "name", "version", "type", "paths", "format", "options", "fingerprint", "file_count", "total_bytes",
        "row_count", "description", "tags", "created", "created_by", "written_by_run")}
    if details:  # a tabular version's, in the answer about that version
        view.update({key: details[key] for key in ("schema", "preview", "profile")})
    return view


class Datasets:
    def __init__(self, ctx: Context, datastore_files: DatastoreFiles | None):
        self.ctx = ctx
        self.datastore_files = datastore_files

    # --- registering ----------------------------------------------------------------------------
    def register(self, principal: Principal, workspace: str, name: str, kind: str, paths: list,
                 fmt: str | None = None, options: dict | None = None, description: str | None = None,
                 tags: dict | None = None, create_new_version: bool = False) -> dict:
        """Lists the paths, fingerprints the listing and, for tabular data, reads and profiles it; then
        adds a version. Answers the existing version (with `existing: true`) when this definition was
        registered over the same data; refuses a new version of a taken name without create_new_version."""
        check_dataset_name(name)
        if kind not in TYPES:
            raise Invalid("type must be file or tabular", field="type")
        sources = check_paths(paths)
        if kind == "tabular":
            from chalicelib.services import tabular  # here: pyarrow loads only for tabular datasets

            fmt = fmt or "delimited"
            options = tabular.check_options(fmt, options)
        elif fmt is not None or options:
            raise Invalid("a file dataset takes no format or options", field="format")
        tags = version_entries(tags, "tags")
        description = check_text(description or "", "description", 5000)
        record = Workspaces(self.ctx).record(workspace)
        listed, stores = self._list(workspace, sources)
        definition = {"type": kind, "paths": [{"datastore": d, "path": p} for d, p in sources], "format": fmt,
                      "options": options or {}}
        data_fingerprint = fingerprint(listed)
        identity = hashlib.sha256(json.dumps([definition, data_fingerprint], sort_keys=True).encode()).hexdigest()
        existing = self._registered_identity(workspace, name, identity)
        if existing is not None:
            return {**existing, "existing": True}
        dataset = self.ctx.table.get_item(table_keys.dataset(workspace, name))
        if dataset is not None and not create_new_version:
            raise Conflict(f"dataset {name!r} exists (version {dataset['latest_version']}) with another definition "
                           "or other data; register with create_new_version to add a version",
                           field="create_new_version")
        details = self._describe(kind, fmt, options or {}, listed, stores) if kind == "tabular" else {}
        folder = f"{record['blob_prefix']}datasets/{name}/{new_id(self.ctx.clock)}/"
        self.ctx.blobs.put_bytes(folder + "files.json", _json([[f.datastore, f.path, f.size, f.tag] for f in listed]))
        self.ctx.blobs.put_bytes(folder + "details.json", _json(details))
        item = {"entity": "dataset_version", "workspace": workspace, "name": name, **definition,
                "fingerprint": data_fingerprint, "identity": identity, "file_count": len(listed),
                "total_bytes": sum(f.size for f in listed), "row_count": details.get("row_count"),
                "blob_folder": folder, "datastores": sorted({f.datastore for f in listed}),
                "description": description, "tags": tags, "created": self.ctx.now(), "created_by": principal.user,
                "written_by_run": principal.run_id}  # a run's output, registered with its token
        try:
            added = self._add_version(principal, workspace, name, record, item)
        except BaseException:
            self.ctx.blobs.delete_prefix(folder)
            raise
        if added is None:  # the same definition over the same data was registered meanwhile
            self.ctx.blobs.delete_prefix(folder)
            return {**self._registered_identity(workspace, name, identity), "existing": True}
        return {**version_view(added, details), "existing": False}

    def _list(self, workspace: str, sources: list[tuple[str, str]]) -> tuple[list[SourceFile], dict]:
        """Every file the paths match, once each, and the store behind each datastore."""
        stores: dict[str, tuple] = {}
        seen: dict[tuple[str, str], SourceFile] = {}
        for index, (datastore, path) in enumerate(sources):
            if datastore not in stores:
                try:
                    stores[datastore] = self.datastore_files.open(workspace, datastore)
                except NotFound:
                    raise NotFound(f"no datastore {datastore!r} in workspace {workspace!r}",
                                   field=f"paths[{index}].datastore") from None
            blobs, base = stores[datastore]
            for file in matching_files(blobs, base, datastore, path, f"paths[{index}].path"):
                seen.setdefault((file.datastore, file.path), file)
        return sorted(seen.values(), key=lambda f: (f.datastore, f.path)), stores

    def _describe(self, kind: str, fmt: str, options: dict, listed: list[SourceFile], stores: dict) -> dict:
        from chalicelib.services import tabular  # here: as in register

        total = sum(f.size for f in listed)
        if total > MAX_TABULAR_BYTES:
            raise Invalid(f"the files hold {total:,} bytes; a tabular dataset is profiled whole at registration, "
                          f"up to {MAX_TABULAR_BYTES:,}: register a file dataset instead", field="paths")
        tables = []
        for file in listed:
            blobs, base = stores[file.datastore]
            with blobs.open_read(base + file.path) as stream:  # streamed, never whole in memory as bytes
                tables.append((file.path, tabular.read_table(stream, fmt, options, file.path)))
        return tabular.describe(tabular.combine(tables))

    def _registered_identity(self, workspace: str, name: str, identity: str) -> dict | None:
        claim = self.ctx.table.get_item(table_keys.dataset_identity(workspace, name, identity))
        if claim is None:
            return None
        item = self.ctx.table.get_item(table_keys.dataset_version(workspace, name, int(claim["version"])))
        return version_view(item, self._details(item)) if item is not None else None

    def _add_version(self, principal: Principal, workspace: str, name: str, record: dict, item: dict) -> dict | None:
        """Optimistic numbering (as Registry._add_version); None when the identity was claimed meanwhile."""
        dataset_key = table_keys.dataset(workspace, name)
        for attempt in range(REGISTER_ATTEMPTS):
            dataset = self.ctx.table.get_item(dataset_key)
            current = int(dataset["latest_version"]) if dataset else 0
            version = current + 1
            key = table_keys.dataset_version(workspace, name, version)
            claim = table_keys.dataset_identity(workspace, name, item["identity"])
            new = {**item, "pk": key.pk, "sk": key.sk, "version": version}
            operations: list[Operation] = [
                Update(dataset_key, set={"latest_version": version, "updated": item["created"]},
                       set_if_absent={"entity": "dataset", "workspace": workspace, "name": name,
                                      "created": item["created"], "created_by": item["created_by"]},
                       condition=attr_eq("latest_version", current) if current else attr_absent("latest_version")),
                Put(new, item_absent()),
                Check(table_keys.workspace(workspace), attr_eq("id", record["id"])),
                Put({"pk": claim.pk, "sk": claim.sk, "entity": "dataset_identity", "version": version}, item_absent()),
            ]
            # Each datastore read counts this version, and must still exist for it to be counted.
            operations += [Update(table_keys.datastore(workspace, datastore), add={"dataset_versions": 1},
                                  condition=item_exists())
                           for datastore in item["datastores"] if datastore != BUILTIN_DATASTORE]
            if item["written_by_run"]:  # the run lists what it wrote
                written = table_keys.run_dataset_output(item["written_by_run"], name, version)
                operations.append(Put({"pk": written.pk, "sk": written.sk, "entity": "run_dataset_output",
                                       "name": name, "version": version, "fingerprint": item["fingerprint"]}))
            try:
                self.ctx.table.transact([*operations, Audit(self.ctx).entry(
                    principal, workspace, "dataset_version.registered", f"{name}:{version}",
                    {"type": item["type"], "fingerprint": item["fingerprint"]}, workspace_id=record["id"])])
            except ConditionFailed as failure:
                if failure.index == 2:
                    raise NotFound(f"workspace {workspace!r} not found") from None
                if failure.index == 3:
                    return None
                if failure.index >= 4:
                    gone = [d for d in item["datastores"] if d != BUILTIN_DATASTORE][failure.index - 4]
                    raise NotFound(f"datastore {gone!r} was deleted meanwhile", field="paths") from None
                time.sleep(contention_pause(attempt))
                continue
            return new
        raise Unavailable(f"too many concurrent registrations of dataset {name!r}; retry")

    # --- reading --------------------------------------------------------------------------------
    def list(self, workspace: str) -> list[dict]:
        """Every dataset with its latest version, in name order."""
        Workspaces(self.ctx).record(workspace)
        datasets = self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace),
                                                  sk_prefix=table_keys.DATASET_PREFIX))
        latest = []
        for dataset in datasets:
            try:
                latest.append(version_view(self.version_item(workspace, dataset["name"])))
            except NotFound:  # every version was unregistered: the name keeps its count, nothing to show
                continue
        return latest

    def versions(self, workspace: str, name: str) -> list[dict]:
        self.dataset(workspace, name)
        query = Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.dataset_versions_prefix(name))
        return [version_view(item) for item in self.ctx.table.query_all(query)]

    def dataset(self, workspace: str, name: str) -> dict:
        check_dataset_name(name)
        item = self.ctx.table.get_item(table_keys.dataset(workspace, name))
        if item is None:
            Workspaces(self.ctx).record(workspace)
            raise NotFound(f"no dataset {name!r} in workspace {workspace!r}", field="dataset")
        return item

    def version_item(self, workspace: str, name: str, version: int | str | None = None) -> dict:
        """A version's item; `None` or "latest" is the latest version still registered."""
        if version is None or version == "latest":
            self.dataset(workspace, name)
            query = Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.dataset_versions_prefix(name),
                          forward=False, limit=1)
            newest = self.ctx.table.query(query).items
            if not newest:
                raise NotFound(f"dataset {name!r} has no registered version", field="version")
            return newest[0]
        else:
            check_dataset_name(name)
            version = _version_number(version)
        item = self.ctx.table.get_item(table_keys.dataset_version(workspace, name, version))
        if item is None:
            self.dataset(workspace, name)
            raise NotFound(f"dataset {name!r} has no version {version}", field="version")
        return item

    def get(self, workspace: str, name: str, version: int | str | None = None) -> dict:
        item = self.version_item(workspace, name, version)
        return version_view(item, self._details(item))

    def files(self, workspace: str, name: str, version: int | str | None, max_results: int = 1000,
              page_token: str | None = None) -> dict:
        """The version's files as registered: [{datastore, path, size}], in order, a page at a time."""
        check_page_size(max_results)
        item = self.version_item(workspace, name, version)
        start = (decode_page_token(page_token) or {}).get("i", 0)
        if not isinstance(start, int) or start < 0:
            raise Invalid("page_token does not belong to this listing", field="page_token")
        listed = self._manifest(item)
        page = listed[start:start + max_results]
        more = start + max_results < len(listed)
        return {"files": [{"datastore": f.datastore, "path": f.path, "size": f.size} for f in page],
                "next_page_token": encode_page_token({"i": start + max_results}) if more else None}

    def download(self, workspace: str, name: str, version: int | str | None, files: list) -> dict:
        """Presigned GETs for files of the version ([{datastore, path}]); a file it does not hold is a 400."""
        item = self.version_item(workspace, name, version)
        if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES_PER_REQUEST:
            raise Invalid(f"files must list 1-{MAX_FILES_PER_REQUEST} files", field="files")
        held = {(f.datastore, f.path) for f in self._manifest(item)}
        wanted: dict[str, list[str]] = {}
        for index, entry in enumerate(files):
            pair = (entry.get("datastore"), entry.get("path")) if isinstance(entry, dict) else (None, None)
            if pair not in held:
                raise Invalid(f"files[{index}] is not a file of {name}:{item['version']}", field=f"files[{index}]")
            wanted.setdefault(pair[0], []).append(check_output_path(pair[1], f"files[{index}].path"))
        downloads = []
        for datastore, paths in wanted.items():
            for link in self.datastore_files.download(workspace, datastore, paths)["downloads"]:
                downloads.append({"datastore": datastore, **link})
        return {"downloads": downloads}

    def verify(self, workspace: str, name: str, version: int | str | None = None) -> dict:
        """Lists the data again: does it still match the fingerprint the version was registered with?"""
        item = self.version_item(workspace, name, version)
        registered = {(f.datastore, f.path): f for f in self._manifest(item)}
        try:
            current, _ = self._list(workspace, [(p["datastore"], p["path"]) for p in item["paths"]])
        except Invalid:  # a path that matches nothing now: every registered file is gone
            current = []
        now = {(f.datastore, f.path): f for f in current}
        changed = sorted(p for p in registered.keys() & now.keys()
                         if (registered[p].size, registered[p].tag) != (now[p].size, now[p].tag))
        added, removed = sorted(now.keys() - registered.keys()), sorted(registered.keys() - now.keys())
        now_fingerprint = fingerprint(current) if current else None

        def named(pairs: list) -> list[dict]:
            return [{"datastore": d, "path": p} for d, p in pairs[:100]]

        return {"name": name, "version": item["version"], "matches": now_fingerprint == item["fingerprint"],
                "fingerprint": item["fingerprint"], "current_fingerprint": now_fingerprint,
                "changed": named(changed), "added": named(added), "removed": named(removed),
                "counts": {"changed": len(changed), "added": len(added), "removed": len(removed)}}

    def runs(self, workspace: str, name: str, version: int | str | None = None) -> list[dict]:
        """The runs that read a version, in the order they were submitted (run_datasets.py writes the uses)."""
        item = self.version_item(workspace, name, version)
        query = Query(table_keys.workspace_pk(workspace),
                      sk_prefix=table_keys.dataset_uses_prefix(name, int(item["version"])))
        return [{"run_id": use["run_id"], "input": use["input"], "at": use["at"]}
                for use in self.ctx.table.query_all(query)]

    def of_run(self, workspace: str, run_id: str) -> dict:
        """A run's datasets: the versions it read (pinned when it was submitted) and those it wrote."""
        run = Runs(self.ctx).get(workspace, run_id)
        inputs = [{"name": i["dataset"], "version": i["version"], "fingerprint": i["fingerprint"], "input": i["name"],
                   "mode": i["mode"]} for i in (run.get("run_config") or {}).get("inputs") or []]
        query = Query(table_keys.run_pk(run_id), sk_prefix=table_keys.RUN_DATASET_OUTPUT_PREFIX)
        outputs = [{"name": o["name"], "version": o["version"], "fingerprint": o["fingerprint"]}
                   for o in self.ctx.table.query_all(query)]
        return {"run_id": run_id, "inputs": inputs, "outputs": outputs}

    # --- deleting -------------------------------------------------------------------------------
    def delete_version(self, principal: Principal, workspace: str, name: str, version: int | str) -> dict:
        """Unregisters one version (its data stays where it is); its datastores lose the reference."""
        record = Workspaces(self.ctx).record(workspace)
        item = self.version_item(workspace, name, version)
        operations: list[Operation] = [
            Delete(Key(item["pk"], item["sk"]), item_exists()),
            Delete(table_keys.dataset_identity(workspace, name, item["identity"])),
        ]
        operations += [Update(table_keys.datastore(workspace, datastore), add={"dataset_versions": -1},
                              condition=attr_gt("dataset_versions", 0))
                       for datastore in item["datastores"] if datastore != BUILTIN_DATASTORE]
        if item.get("written_by_run"):
            operations.append(Delete(table_keys.run_dataset_output(item["written_by_run"], name, item["version"])))
        try:
            self.ctx.table.transact([*operations, Audit(self.ctx).entry(
                principal, workspace, "dataset_version.deleted", f"{name}:{item['version']}", {},
                workspace_id=record["id"])])
        except ConditionFailed:
            raise Conflict(f"dataset {name}:{item['version']} changed meanwhile; retry", field="version") from None
        self.ctx.blobs.delete_prefix(item["blob_folder"])
        return {"name": name, "version": item["version"], "deleted": True}

    # --- helpers --------------------------------------------------------------------------------
    def _manifest(self, item: dict) -> list[SourceFile]:
        rows = json.loads(self.ctx.blobs.get_bytes(item["blob_folder"] + "files.json"))
        return [SourceFile(*row) for row in rows]

    def _details(self, item: dict) -> dict:
        return json.loads(self.ctx.blobs.get_bytes(item["blob_folder"] + "details.json")) if item else {}


def _version_number(version: int | str) -> int:
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise Invalid(f"version {version!r} must be a number or 'latest'", field="version") from None
    if not 1 <= number <= 10 ** 9:
        raise Invalid("version must be from 1", field="version")
    return number


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
