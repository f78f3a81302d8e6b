"""The model registry: numbered versions of model files with metadata, aliases with a history, and the
in-use accounting that keeps a deployed version from being deleted (docs/models-and-endpoints.md).

A version's files live under their own blob prefix, `<ws prefix>models/files/<upload_id>/`: uploaded
there through presigned URLs, or copied there server-side from a run's stored files.
"""
from __future__ import annotations

import json
import posixpath
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

from chalicelib.errors import Conflict, Invalid, NotFound, TooLarge, Unavailable
from chalicelib.hosting.port import ModelFiles
from chalicelib.services import keys
from chalicelib.services.common import (
    Context, check_name, check_page_size, decode_page_token, encode_page_token, new_id, start_key,
)
from chalicelib.services.identity import Principal
from chalicelib.services.outputs import check_output_path
from chalicelib.services.runs import Runs, check_entries
from chalicelib.services.snapshots import check_path
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.table import (
    Check, ConditionFailed, Delete, Operation, Put, Query, Update, all_of, attr_absent, attr_absent_or_eq, attr_eq,
    item_absent, item_exists,
)

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
MODEL_RULE = "1-255 characters: letters, digits, '_', '.' and '-', starting with a letter or digit"
ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
ALIAS_RULE = "1-63 characters: lowercase letters, digits, '_' and '-', starting with a letter"
RESERVED_ALIASES = frozenset({"latest"})  # `latest` already means the highest version
UPLOAD_ID = re.compile(r"[0-9a-f]{22}")
MAX_FILES = 2000
MAX_FILE_LIST_BYTES = 200 * 1024  # the file list lives on the version item, which DynamoDB caps at 400 KB
MAX_ENTRIES = 200
MAX_ENTRIES_BYTES = 64 * 1024
MAX_DESCRIPTION = 5000
MAX_VERSION = 10**10 - 1  # the sort key holds ten digits
REGISTER_ATTEMPTS = 200  # each lost race means another registration won: many racers need many attempts
ALIAS_ATTEMPTS = 20
COPY_THREADS = 10
UPLOADS = "models/uploads/"  # `<upload_id>.json`: the files an upload announced, until registered
FILES = "models/files/"


def check_model_name(name: Any, field: str = "name") -> str:
    return check_name(name, MODEL_NAME, field, MODEL_RULE)


def check_alias(alias: Any, field: str = "alias") -> str:
    check_name(alias, ALIAS_NAME, field, ALIAS_RULE)
    if alias in RESERVED_ALIASES:
        raise Invalid(f"{field} {alias!r} is reserved: it already names the highest version", field=field)
    return alias


def parse_version(value: Any, field: str = "version") -> int:
    """A version number given as an int or as decimal digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise Invalid(f"{field} must be a version number from 1 to {MAX_VERSION}", field=field)
    return value


def parse_ref(ref: Any, field: str = "model") -> tuple[str, str]:
    """'name:version', 'name:alias' or 'name' (the latest) as (name, version-or-alias-or-'latest')."""
    if not isinstance(ref, str) or not ref:
        raise Invalid(f"{field} must be 'name', 'name:version' or 'name:alias'", field=field)
    name, _, version = ref.partition(":")
    check_model_name(name, field)
    return name, version or "latest"


def asset_path(paths: Sequence[str]) -> str:
    """The file's name for one file, the folder's name when every file sits in one folder, else '.'."""
    firsts = {p.split("/", 1)[0] for p in paths}
    if len(firsts) == 1 and all("/" in p for p in paths):
        return firsts.pop()
    return paths[0] if len(paths) == 1 else "."


class Registry:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    # --- registering ----------------------------------------------------------------------------
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

    def register(self, principal: Principal, workspace: str, name: str, *, upload_id: str | None = None,
                 run_id: str | None = None, path: str | None = None, description: str | None = None,
                 tags: dict | None = None, properties: dict | None = None, framework: str | None = None,
                 framework_version: str | None = None) -> dict:
        """A new version from an upload (`upload_id`) or from a run's stored files (`run_id` + `path`)."""
        check_model_name(name)
        tags, properties = _entries(tags, "tags"), _entries(properties, "properties")
        metadata = {"description": _text(description or "", "description", MAX_DESCRIPTION),
                    "framework": _text(framework, "framework", 255),
                    "framework_version": _text(framework_version, "framework_version", 255)}
        if (upload_id is None) == (run_id is None):
            raise Invalid("give upload_id, or run_id with path", field="upload_id")
        if (run_id is None) != (path is None):
            raise Invalid("path goes with run_id: the file or folder of the run to register", field="path")
        record = Workspaces(self.ctx).record(workspace)
        if upload_id is not None:
            files, lineage = self._uploaded_files(record, name, upload_id), {}
            folder = upload_id
        else:
            folder = new_id(self.ctx.clock)
            files, lineage = self._copy_from_run(record, workspace, run_id, path, folder)
        item = {"entity": "model_version", "workspace": workspace, "name": name,
                "asset_path": asset_path([f["path"] for f in files]), "files": files,
                "total_bytes": sum(f["size"] for f in files), "blob_prefix": f"{record['blob_prefix']}{FILES}{folder}/",
                **metadata, "tags": tags, "properties": properties, "lineage": lineage, "deployments": {},
                "deployment_count": 0, "created": self.ctx.now(), "created_by": principal.user}
        model, item = self._add_version(workspace, name, record, item)
        if upload_id is not None:  # the upload is spent: a second version cannot share (and later delete) its files
            self.ctx.blobs.delete(f"{record['blob_prefix']}{UPLOADS}{upload_id}.json")
        return version_view(model, item)

    def _uploaded_files(self, record: dict, name: str, upload_id: Any) -> list[dict]:
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
        base = f"{record['blob_prefix']}{FILES}{upload_id}/"
        stored = _parallel(lambda f: self.ctx.blobs.find(base + f["path"]), manifest["files"])
        bad = [f["path"] for f, blob in zip(manifest["files"], stored) if blob is None or blob.size != f["size"]]
        if bad:
            shown = ", ".join(repr(p) for p in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise Invalid(f"{len(bad)} file(s) of upload {upload_id} are missing or of another size: {shown}",
                          field="upload_id", details={"missing": bad[:100]})
        return manifest["files"]

    def _copy_from_run(self, record: dict, workspace: str, run_id: Any, path: Any, folder: str
                       ) -> tuple[list[dict], dict]:
        """Copies a run's file, or every file under a run's folder, into the new version's prefix.

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
        _check_file_list(files, "path")
        target = f"{record['blob_prefix']}{FILES}{folder}/"
        _parallel(lambda pair: self.ctx.blobs.copy(pair[0], target + pair[1]), pairs)
        lineage = {"run_id": run_id, "experiment": run["experiment"], "snapshot_id": run.get("snapshot_id")}
        git = {out: (run.get("git") or {}).get(name) for out, name in
               (("commit", "commit"), ("branch", "branch"), ("repository", "remote"))}
        if any(git.values()):
            lineage["git"] = {k: v for k, v in git.items() if v}
        return files, lineage

    def _add_version(self, workspace: str, name: str, record: dict, item: dict) -> tuple[dict, dict]:
        """Optimistic numbering: the model's counter moves from n to n + 1 only if it still reads n."""
        model_key = keys.model(workspace, name)
        for attempt in range(REGISTER_ATTEMPTS):
            model = self.ctx.table.get_item(model_key)
            current = int(model["latest_version"]) if model else 0
            version = current + 1
            key = keys.model_version(workspace, name, version)
            new = {**item, "pk": key.pk, "sk": key.sk, "version": version}
            bump = Update(model_key, set={"latest_version": version},
                          set_if_absent={"entity": "model", "workspace": workspace, "name": name, "aliases": {},
                                         "created": item["created"], "created_by": item["created_by"]},
                          condition=attr_eq("latest_version", current) if current else attr_absent("latest_version"))
            try:
                # The check on the workspace's id keeps a version out of a workspace deleted meanwhile.
                self.ctx.table.transact([bump, Put(new, item_absent()),
                                         Check(keys.workspace(workspace), attr_eq("id", record["id"]))])
            except ConditionFailed as failure:
                if failure.index == 2:
                    raise NotFound(f"workspace {workspace!r} not found") from None
                time.sleep(_backoff(attempt))
                continue
            return {**(model or {}), "aliases": (model or {}).get("aliases", {}), "latest_version": version}, new
        raise Unavailable(f"too many concurrent registrations of model {name!r}; retry")

    # --- reading --------------------------------------------------------------------------------
    def get_model(self, workspace: str, name: str) -> dict:
        model = self._model(workspace, name)
        return {"name": model["name"], "latest_version": model["latest_version"],
                "aliases": model.get("aliases", {}), "created": model["created"]}

    def get_version(self, workspace: str, name: str, version: str) -> dict:
        return version_view(*self._find(workspace, name, version))

    def resolve(self, workspace: str, ref: str, field: str = "model") -> dict:
        """The version view of 'name:version', 'name:alias' or 'name' (the latest version)."""
        name, version = parse_ref(ref, field)
        return version_view(*self._find(workspace, name, version, field))

    def list_versions(self, workspace: str, name: str, max_results: int = 100, page_token: str | None = None) -> dict:
        """One model's versions, newest first."""
        check_page_size(max_results)
        model = self._model(workspace, name)
        start = start_key(decode_page_token(page_token), pk=keys.workspace_pk(workspace))
        prefix = keys.model_versions_prefix(name)
        if start is not None and not start.get("sk", "").startswith(prefix):
            raise Invalid("page_token does not belong to this listing", field="page_token")
        page = self.ctx.table.query(Query(keys.workspace_pk(workspace), sk_prefix=prefix, forward=False,
                                          limit=max_results, start=start))
        return {"versions": [version_view(model, i) for i in page.items],
                "next_page_token": encode_page_token({"k": page.next}) if page.next else None}

    def list_models(self, workspace: str, *, name: str | None = None, tags: Sequence[str] = (),
                    all_versions: bool = False, max_results: int = 100, page_token: str | None = None) -> dict:
        """Latest versions (or every version, newest first) by model name, filtered by tags `k` or `k=v`."""
        check_page_size(max_results)
        if name is not None:
            check_model_name(name)
        wanted = _tag_filters(tags)
        after_name, after_sk = self._list_position(page_token)
        found: list[dict] = []
        for model in self._models_from(workspace, name, after_name, resume_inside=after_sk is not None):
            inside = after_sk if model["name"] == after_name else None
            for item in self._candidates(workspace, model, all_versions, inside):
                if all(k in item.get("tags", {}) and (v is None or item["tags"][k] == v) for k, v in wanted):
                    found.append(version_view(model, item))
                if len(found) == max_results:
                    state = {"n": model["name"], "v": item["sk"] if all_versions else None}
                    return {"models": found, "next_page_token": encode_page_token(state)}
        return {"models": found, "next_page_token": None}

    def _list_position(self, page_token: str | None) -> tuple[str | None, str | None]:
        state = decode_page_token(page_token) or {}
        after_name, after_sk = state.get("n"), state.get("v")
        if after_name is not None and (not isinstance(after_name, str) or not MODEL_NAME.fullmatch(after_name)):
            raise Invalid("page_token is malformed", field="page_token")
        if after_sk is not None and (after_name is None or not isinstance(after_sk, str)
                                     or not after_sk.startswith(keys.model_versions_prefix(after_name))):
            raise Invalid("page_token is malformed", field="page_token")
        return after_name, after_sk

    def _models_from(self, workspace: str, name: str | None, after_name: str | None,
                     resume_inside: bool) -> Iterator[dict]:
        """Model items in name order, after `after_name` (or from it, when a page ended inside it)."""
        if name is not None:
            if after_name is None or (after_name == name and resume_inside):
                model = self.ctx.table.get_item(keys.model(workspace, name))
                if model is not None:
                    yield model
            return
        pk, start = keys.workspace_pk(workspace), None
        if after_name is not None:
            if resume_inside and (model := self.ctx.table.get_item(keys.model(workspace, after_name))):
                yield model
            start = {"pk": pk, "sk": keys.model(workspace, after_name).sk}
        yield from self.ctx.table.query_all(Query(pk, sk_prefix=keys.MODEL_PREFIX, start=start, limit=100))

    def _candidates(self, workspace: str, model: dict, all_versions: bool, after_sk: str | None) -> Iterator[dict]:
        if not all_versions:
            latest = self._latest(workspace, model["name"])
            if latest is not None:
                yield latest
            return
        pk = keys.workspace_pk(workspace)
        yield from self.ctx.table.query_all(Query(pk, sk_prefix=keys.model_versions_prefix(model["name"]),
                                                  forward=False, limit=100,
                                                  start={"pk": pk, "sk": after_sk} if after_sk else None))

    def download_urls(self, workspace: str, name: str, version: str) -> dict:
        _, item = self._find(workspace, name, version)
        expires = self.ctx.settings.presign_seconds
        return {"files": [{**f, "url": self.ctx.blobs.presign_get(item["blob_prefix"] + f["path"], expires)}
                          for f in item["files"]]}

    def model_files(self, workspace: str, version_view: dict) -> ModelFiles:
        """What a deployment needs of a version (its blob prefix stays inside the service)."""
        item = self.ctx.table.get_item(keys.model_version(workspace, version_view["name"], version_view["version"]))
        if item is None:
            raise NotFound(f"model {version_view['id']} not found in workspace {workspace!r}")
        return ModelFiles(item["name"], int(item["version"]), item["asset_path"], item["blob_prefix"],
                          tuple((f["path"], int(f["size"])) for f in item["files"]))

    # --- changing -------------------------------------------------------------------------------
    def update_version(self, workspace: str, name: str, version: str, *, tags: dict | None = None,
                       remove_tags: list | None = None, properties: dict | None = None,
                       description: str | None = None) -> dict:
        """Tags change freely; a property may be set again to the same value only (409 otherwise)."""
        model, item = self._find(workspace, name, version)
        tags, properties = _entries(tags, "tags"), _entries(properties, "properties")
        remove = remove_tags or []
        if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
            raise Invalid("remove_tags must be a list of tag keys", field="remove_tags")
        if both := sorted(set(tags) & set(remove)):
            raise Invalid(f"tag {both[0]!r} is both set and removed", field="remove_tags")
        kept = {k: v for k, v in {**item["tags"], **tags}.items() if k not in remove}
        _check_room(kept, "tags")
        _check_room({**item["properties"], **properties}, "properties")
        for key, value in properties.items():
            _check_property(item, key, value)
        changes: dict = {("tags", k): v for k, v in tags.items()}
        changes.update({("properties", k): v for k, v in properties.items()})
        if description is not None:
            changes["description"] = _text(description, "description", MAX_DESCRIPTION)
        if not changes and not remove:
            return version_view(model, item)
        condition = all_of(item_exists(), *(attr_absent_or_eq(("properties", k), v) for k, v in properties.items()))
        update = Update(keys.model_version(workspace, name, item["version"]), set=changes,
                        remove=[("tags", k) for k in remove], condition=condition)
        try:
            new = self.ctx.table.update(update)
        except ConditionFailed:
            current = self.ctx.table.get_item(update.key)
            if current is None:
                raise NotFound(f"model {name}:{item['version']} not found") from None
            for key, value in properties.items():
                _check_property(current, key, value)
            raise Conflict(f"model {name}:{item['version']} changed meanwhile; retry") from None
        return version_view(model, new)

    def delete_version(self, principal: Principal, workspace: str, name: str, version: str) -> dict:
        """Refused while a deployment uses the version; aliases on it go too (recorded in their history)."""
        number = parse_version(version)
        key = keys.model_version(workspace, name, number)
        item = None
        for attempt in range(ALIAS_ATTEMPTS):
            model = self._model(workspace, name)
            item = self.ctx.table.get_item(key)
            if item is None:
                raise NotFound(f"model {name}:{number} not found in workspace {workspace!r}")
            _check_unused(item)
            pointing = sorted(a for a, v in model.get("aliases", {}).items() if v == number)
            operations: list[Operation] = [Delete(key, all_of(item_exists(), attr_absent_or_eq("deployment_count", 0)))]
            if pointing:
                moves = int(model.get("alias_moves", 0))
                operations.append(Update(keys.model(workspace, name), remove=[("aliases", a) for a in pointing],
                                         add={"alias_moves": len(pointing)},
                                         condition=all_of(attr_absent_or_eq("alias_moves", moves),
                                                          *(attr_eq(("aliases", a), number) for a in pointing))))
                operations += [self._history(workspace, name, moves + 1 + i, a, number, None, principal.user)
                               for i, a in enumerate(pointing)]
            try:
                self.ctx.table.transact(operations)
                break
            except ConditionFailed:
                time.sleep(_backoff(attempt))  # used, deleted or re-aliased meanwhile: look again
        else:
            raise Unavailable(f"model {name}:{number} keeps changing; retry")
        self.ctx.blobs.delete_prefix(item["blob_prefix"])
        return {"deleted": f"{name}:{number}"}

    # --- aliases --------------------------------------------------------------------------------
    def set_alias(self, principal: Principal, workspace: str, name: str, alias: str, version: Any) -> dict:
        """Create or move an alias: one transaction updates it (if unchanged since read) and logs the move."""
        check_alias(alias)
        number = parse_version(version)
        return self._move_alias(principal, workspace, name, alias, number)

    def delete_alias(self, principal: Principal, workspace: str, name: str, alias: str) -> dict:
        check_alias(alias)
        moved = self._move_alias(principal, workspace, name, alias, None)
        return {"alias": alias, "previous": moved["previous"]}

    def aliases(self, workspace: str, name: str) -> dict:
        model = self._model(workspace, name)
        moves = self.ctx.table.query_all(Query(keys.workspace_pk(workspace),
                                               sk_prefix=keys.model_alias_moves_prefix(name)))
        return {"aliases": model.get("aliases", {}),
                "history": [{"alias": m["alias"], "from": m["from"], "to": m["to"], "by": m["by"], "at": m["at"]}
                            for m in moves]}

    def _move_alias(self, principal: Principal, workspace: str, name: str, alias: str, target: int | None) -> dict:
        model_key = keys.model(workspace, name)
        for attempt in range(ALIAS_ATTEMPTS):
            model = self._model(workspace, name)
            previous, moves = model.get("aliases", {}).get(alias), int(model.get("alias_moves", 0))
            if previous is None and target is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            if previous == target:
                return {"alias": alias, "version": target, "previous": previous}
            # The move counter orders the history, and makes concurrent moves of one model take turns.
            unchanged = attr_eq(("aliases", alias), previous) if previous is not None else attr_absent(("aliases", alias))
            move = Update(model_key, add={"alias_moves": 1},
                          condition=all_of(item_exists(), unchanged, attr_absent_or_eq("alias_moves", moves)))
            if target is None:
                move.remove = [("aliases", alias)]
            else:
                move.set = {("aliases", alias): target}
            history = self._history(workspace, name, moves + 1, alias, previous, target, principal.user)
            operations: list[Operation] = [move, history]
            if target is not None:
                operations.append(Check(keys.model_version(workspace, name, target), item_exists()))
            try:
                self.ctx.table.transact(operations)
            except ConditionFailed as failure:
                if failure.index == 2:
                    raise NotFound(f"model {name}:{target} not found", field="version") from None
                time.sleep(_backoff(attempt))
                continue
            return {"alias": alias, "version": target, "previous": previous}
        raise Unavailable(f"alias {alias!r} of model {name!r} keeps moving; retry")

    def _history(self, workspace: str, name: str, sequence: int, alias: str, previous: int | None,
                 target: int | None, by: str) -> Put:
        key = keys.model_alias_move(workspace, name, sequence)
        return Put({"pk": key.pk, "sk": key.sk, "entity": "model_alias_move", "name": name, "alias": alias,
                    "from": previous, "to": target, "by": by, "at": self.ctx.now()}, item_absent())

    # --- in use by deployments (called by the deployments service) -------------------------------
    def use_operations(self, workspace: str, name: str, version: int, deployment_key: str) -> list[Operation]:
        """The writes that mark `deployment_key` ('<endpoint>/<deployment>') as using name:version.

        Computed from the version as read now: when the deployment is already in its map the answer is a
        Check that it still is (no double count); otherwise an Update adding it and `deployment_count + 1`
        under the condition that the entry is still absent. A ConditionFailed on these means a concurrent
        change: call again and retry the transaction. Raises NotFound when the version does not exist.
        """
        key = keys.model_version(workspace, name, int(version))
        item = self.ctx.table.get_item(key)
        if item is None:
            raise NotFound(f"model {name}:{version} not found in workspace {workspace!r}")
        entry = ("deployments", deployment_key)
        if deployment_key in item.get("deployments", {}):
            return [Check(key, attr_eq(entry, True))]
        return [Update(key, set={entry: True}, add={"deployment_count": 1},
                       condition=all_of(item_exists(), attr_absent(entry)))]

    def release_operations(self, workspace: str, name: str, version: int, deployment_key: str) -> list[Operation]:
        """The writes that end `deployment_key`'s use of name:version: the entry goes, the count drops by one
        (condition: the entry is still there). Empty when the version does not list the deployment."""
        key = keys.model_version(workspace, name, int(version))
        item = self.ctx.table.get_item(key)
        entry = ("deployments", deployment_key)
        if item is None or deployment_key not in item.get("deployments", {}):
            return []
        return [Update(key, remove=[entry], add={"deployment_count": -1}, condition=attr_eq(entry, True))]

    # --- helpers --------------------------------------------------------------------------------
    def _model(self, workspace: str, name: str) -> dict:
        check_model_name(name)
        model = self.ctx.table.get_item(keys.model(workspace, name))
        if model is None:
            raise NotFound(f"model {name!r} not found in workspace {workspace!r}")
        return model

    def _latest(self, workspace: str, name: str) -> dict | None:
        """The highest existing version (the counter may name a deleted one)."""
        page = self.ctx.table.query(Query(keys.workspace_pk(workspace), sk_prefix=keys.model_versions_prefix(name),
                                          forward=False, limit=1))
        return page.items[0] if page.items else None

    def _find(self, workspace: str, name: str, version: Any, field: str = "version") -> tuple[dict, dict]:
        """(model item, version item) for a version number, an alias or 'latest'."""
        model = self._model(workspace, name)
        text = str(version)
        if text == "latest":
            item = self._latest(workspace, name)
        elif text.isascii() and text.isdigit():
            item = self.ctx.table.get_item(keys.model_version(workspace, name, parse_version(text, field)))
        elif ALIAS_NAME.fullmatch(text):
            number = model.get("aliases", {}).get(text)
            if number is None:
                raise NotFound(f"model {name!r} has no alias {text!r}")
            item = self.ctx.table.get_item(keys.model_version(workspace, name, int(number)))
        else:
            raise Invalid(f"{field} {text!r} must be a version number, an alias or 'latest'", field=field)
        if item is None:
            raise NotFound(f"model {name}:{text} not found in workspace {workspace!r}")
        return model, item


def version_view(model: dict, item: dict) -> dict:
    version = int(item["version"])
    return {"name": item["name"], "version": version, "id": f"{item['name']}:{version}",
            "asset_path": item["asset_path"], "files": [{"path": f["path"], "size": int(f["size"])} for f in item["files"]],
            "total_bytes": int(item["total_bytes"]), "description": item.get("description", ""),
            "framework": item.get("framework"), "framework_version": item.get("framework_version"),
            "tags": item.get("tags", {}), "properties": item.get("properties", {}),
            "aliases": sorted(a for a, v in model.get("aliases", {}).items() if int(v) == version),
            "lineage": item.get("lineage", {}), "deployments": sorted(item.get("deployments", {})),
            "created": item["created"], "created_by": item["created_by"]}


def check_upload_files(files: Any) -> list[dict]:
    """[{path, size}] as the request gave them, checked; errors name `files[i].<field>`."""
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise Invalid(f"files must list 1-{MAX_FILES} files", field="files")
    checked, seen = [], {}
    for index, entry in enumerate(files):
        field = f"files[{index}]"
        if not isinstance(entry, dict):
            raise Invalid(f"{field} must be an object of path and size", field=field)
        for unknown in set(entry) - {"path", "size"}:
            raise Invalid(f"{field}.{unknown} is not a known field", field=f"{field}.{unknown}")
        path = check_path(entry.get("path"), f"{field}.path")
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise Invalid(f"{field}.size must be an integer of at least 0", field=f"{field}.size")
        if path in seen:
            raise Invalid(f"{field}.path {path!r} repeats files[{seen[path]}].path", field=f"{field}.path")
        seen[path] = index
        checked.append({"path": path, "size": size})
    for f in checked:  # a file cannot also be the folder of another: the version could not be written out
        parts = f["path"].split("/")
        for depth in range(1, len(parts)):
            if (folder := "/".join(parts[:depth])) in seen:
                raise Invalid(f"files[{seen[folder]}].path {folder!r} is a file and also the folder of {f['path']!r}",
                              field=f"files[{seen[folder]}].path")
    _check_file_list(checked, "files")
    return checked


def _check_file_list(files: list[dict], field: str) -> None:
    if len(json.dumps(files)) > MAX_FILE_LIST_BYTES:
        raise TooLarge(f"the file list takes more than {MAX_FILE_LIST_BYTES} bytes; register fewer files "
                       "(e.g. one archive of them)", field=field)


def _entries(entries: Any, field: str) -> dict[str, str]:
    checked = check_entries(entries if entries is not None else {}, field)
    _check_room(checked, field)
    return dict(checked)


def _check_room(entries: dict, field: str) -> None:
    if len(entries) > MAX_ENTRIES or sum(len(k) + len(v) for k, v in entries.items()) > MAX_ENTRIES_BYTES:
        raise Invalid(f"a model version holds at most {MAX_ENTRIES} {field} of {MAX_ENTRIES_BYTES} characters in all",
                      field=field)


def _check_property(item: dict, key: str, value: str) -> None:
    current = item.get("properties", {}).get(key)
    if current is not None and current != value:
        raise Conflict(f"property {key!r} of model {item['name']}:{item['version']} is already {current!r}; "
                       "properties are write-once", field=f"properties.{key}")


def _check_unused(item: dict) -> None:
    if int(item.get("deployment_count") or 0) > 0:
        users = sorted(item.get("deployments", {}))
        raise Conflict(f"model {item['name']}:{item['version']} is used by deployment(s) {', '.join(users)}; "
                       "delete them or move them to another version first", field="version",
                       details={"deployments": users})


def _text(value: Any, field: str, limit: int) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise Invalid(f"{field} must be text of at most {limit} characters", field=field)
    return value


def _tag_filters(tags: Sequence[str]) -> list[tuple[str, str | None]]:
    filters = []
    for text in tags:
        key, sep, value = text.partition("=")
        if not key:
            raise Invalid(f"tag filter {text!r} must be 'key' or 'key=value'", field="tag")
        filters.append((key, value if sep else None))
    return filters


def _backoff(attempt: int) -> float:
    """Full jitter, growing to at most 0.2 s: racers spread out instead of colliding again together."""
    return random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6)))


def _parallel(task: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
    if len(jobs) <= 1:
        return [task(job) for job in jobs]
    with ThreadPoolExecutor(min(COPY_THREADS, len(jobs))) as pool:
        return list(pool.map(task, jobs))
