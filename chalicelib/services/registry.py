"""The model registry: numbered versions of model files with metadata, aliases with a history, and the
in-use accounting that keeps a deployed version from being deleted (docs/models-and-endpoints.md).

Where a version's files come from (an upload, or a copy of a run's files) is model_uploads' concern.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

from chalicelib.errors import Conflict, Invalid, NotFound, Unavailable
from chalicelib.hosting.port import ModelFiles
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.contention import contention_pause
from chalicelib.domain.ids import new_id
from chalicelib.domain.validation import check_page_size, decode_page_token, encode_page_token, start_key
from chalicelib.services.audit import Audit
from chalicelib.services.identity import Principal
from chalicelib.services.model_uploads import ModelFileSources, files_prefix
from chalicelib.services.registry_input import (
    ALIAS_NAME, MAX_DESCRIPTION, MODEL_NAME, asset_path, check_alias, check_model_name, check_property, check_room,
    check_text, parse_ref, parse_version, tag_filters, version_entries,
)
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.table import (
    Check, ConditionFailed, Delete, Key, Operation, Put, Query, Update, all_of, attr_absent, attr_absent_or_eq, attr_eq,
    item_absent, item_exists,
)

REGISTER_ATTEMPTS = 200  # each lost race means another registration won: many racers need many attempts
ALIAS_ATTEMPTS = 20


class Registry:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    # --- registering ----------------------------------------------------------------------------
    def upload_urls(self, workspace: str, name: str, files: Any) -> dict:
        """Presigned PUTs for a new version's files (see model_uploads)."""
        return ModelFileSources(self.ctx).upload_urls(workspace, name, files)

    def register(self, principal: Principal, workspace: str, name: str, *, upload_id: str | None = None,
                 run_id: str | None = None, path: str | None = None, description: str | None = None,
                 tags: dict | None = None, properties: dict | None = None, framework: str | None = None,
                 framework_version: str | None = None) -> dict:
        """A new version from an upload (`upload_id`) or from a run's stored files (`run_id` + `path`)."""
        check_model_name(name)
        tags, properties = version_entries(tags, "tags"), version_entries(properties, "properties")
        metadata = {"description": check_text(description or "", "description", MAX_DESCRIPTION),
                    "framework": check_text(framework, "framework", 255),
                    "framework_version": check_text(framework_version, "framework_version", 255)}
        if (upload_id is None) == (run_id is None):
            raise Invalid("give upload_id, or run_id with path", field="upload_id")
        if (run_id is None) != (path is None):
            raise Invalid("path goes with run_id: the file or folder of the run to register", field="path")
        record, sources = Workspaces(self.ctx).record(workspace), ModelFileSources(self.ctx)
        if upload_id is not None:
            repeated = self._registered_upload(workspace, name, upload_id)
            if repeated is not None:  # a retry of a registration whose answer was lost
                return repeated
            files, lineage = sources.from_upload(record, name, upload_id), {}
            folder = upload_id
        else:
            folder = new_id(self.ctx.clock)
            files, lineage = sources.from_run(record, workspace, run_id, path, folder)
        item = {"entity": "model_version", "workspace": workspace, "name": name,
                "asset_path": asset_path([f["path"] for f in files]), "files": files,
                "total_bytes": sum(f["size"] for f in files), "blob_prefix": files_prefix(record, folder),
                **metadata, "tags": tags, "properties": properties, "lineage": lineage, "deployments": {},
                "deployment_count": 0, "created": self.ctx.now(), "created_by": principal.user}
        claim = table_keys.model_upload_registration(workspace, name, upload_id) if upload_id is not None else None
        added = self._add_version(principal, workspace, name, record, item, claim)
        if added is None:  # a concurrent repeat of this registration won the race
            return self._registered_upload(workspace, name, upload_id)
        model, item = added
        if upload_id is not None:  # the upload is spent: a second version cannot share (and later delete) its files
            sources.spend_upload(record, upload_id)
        return version_view(model, item)

    def _registered_upload(self, workspace: str, name: str, upload_id: str) -> dict | None:
        """The version an upload was registered as (None if it was not); refused if that version is gone."""
        claim = self.ctx.table.get_item(table_keys.model_upload_registration(workspace, name, upload_id))
        if claim is None:
            return None
        model, item = self.ctx.table.get_item(table_keys.model(workspace, name)), self.ctx.table.get_item(
            table_keys.model_version(workspace, name, int(claim["version"])))
        if model is None or item is None:
            raise Invalid(f"upload {upload_id} is unknown or already registered; ask for upload URLs first",
                          field="upload_id")
        return version_view(model, item)

    def _add_version(self, principal: Principal, workspace: str, name: str, record: dict, item: dict,
                     claim: Key | None = None) -> tuple[dict, dict] | None:
        """Optimistic numbering: the model's counter moves from n to n + 1 only if it still reads n.

        `claim` (an upload's registration) is written in the same transaction, once: None is returned
        when it already exists, i.e. the same upload was registered meanwhile."""
        model_key = table_keys.model(workspace, name)
        for attempt in range(REGISTER_ATTEMPTS):
            model = self.ctx.table.get_item(model_key)
            current = int(model["latest_version"]) if model else 0
            version = current + 1
            key = table_keys.model_version(workspace, name, version)
            new = {**item, "pk": key.pk, "sk": key.sk, "version": version}
            bump = Update(model_key, set={"latest_version": version},
                          set_if_absent={"entity": "model", "workspace": workspace, "name": name, "aliases": {},
                                         "created": item["created"], "created_by": item["created_by"]},
                          condition=attr_eq("latest_version", current) if current else attr_absent("latest_version"))
            operations: list[Operation] = [bump, Put(new, item_absent()),
                                           Check(table_keys.workspace(workspace), attr_eq("id", record["id"]))]
            if claim is not None:
                operations.append(Put({"pk": claim.pk, "sk": claim.sk, "entity": "model_upload_registration",
                                       "version": version}, item_absent()))
            try:
                # The check on the workspace's id keeps a version out of a workspace deleted meanwhile.
                self.ctx.table.transact([*operations, Audit(self.ctx).entry(
                    principal, workspace, "model_version.registered", f"{name}:{version}",
                    {"total_bytes": new["total_bytes"]}, workspace_id=record["id"])])
            except ConditionFailed as failure:
                if failure.index == 2:
                    raise NotFound(f"workspace {workspace!r} not found") from None
                if failure.index == 3:
                    return None
                time.sleep(contention_pause(attempt))
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

    def version_item(self, workspace: str, ref: str, field: str = "model") -> dict:
        """The stored version `ref` names (as for `resolve`). A deployment reads each of its versions once,
        with this, and passes the item on (`model_files_of`, `use_operations(item=…)`)."""
        name, version = parse_ref(ref, field)
        return self._find(workspace, name, version, field)[1]

    def list_versions(self, workspace: str, name: str, max_results: int = 100, page_token: str | None = None) -> dict:
        """One model's versions, newest first."""
        check_page_size(max_results)
        model = self._model(workspace, name)
        start = start_key(decode_page_token(page_token), pk=table_keys.workspace_pk(workspace))
        prefix = table_keys.model_versions_prefix(name)
        if start is not None and not start.get("sk", "").startswith(prefix):
            raise Invalid("page_token does not belong to this listing", field="page_token")
        page = self.ctx.table.query(Query(table_keys.workspace_pk(workspace), sk_prefix=prefix, forward=False,
                                          limit=max_results, start=start))
        return {"versions": [version_view(model, i) for i in page.items],
                "next_page_token": encode_page_token({"k": page.next}) if page.next else None}

    def list_models(self, workspace: str, *, name: str | None = None, tags: Sequence[str] = (),
                    all_versions: bool = False, max_results: int = 100, page_token: str | None = None) -> dict:
        """Latest versions (or every version, newest first) by model name, filtered by tags `k` or `k=v`."""
        check_page_size(max_results)
        if name is not None:
            check_model_name(name)
        wanted = tag_filters(tags)
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
                                     or not after_sk.startswith(table_keys.model_versions_prefix(after_name))):
            raise Invalid("page_token is malformed", field="page_token")
        return after_name, after_sk

    def _models_from(self, workspace: str, name: str | None, after_name: str | None,
                     resume_inside: bool) -> Iterator[dict]:
        """Model items in name order, after `after_name` (or from it, when a page ended inside it)."""
        if name is not None:
            if after_name is None or (after_name == name and resume_inside):
                model = self.ctx.table.get_item(table_keys.model(workspace, name))
                if model is not None:
                    yield model
            return
        pk, start = table_keys.workspace_pk(workspace), None
        if after_name is not None:
            if resume_inside and (model := self.ctx.table.get_item(table_keys.model(workspace, after_name))):
                yield model
            start = {"pk": pk, "sk": table_keys.model(workspace, after_name).sk}
        yield from self.ctx.table.query_all(Query(pk, sk_prefix=table_keys.MODEL_PREFIX, start=start, limit=100))

    def _candidates(self, workspace: str, model: dict, all_versions: bool, after_sk: str | None) -> Iterator[dict]:
        if not all_versions:
            latest = self._latest(workspace, model["name"])
            if latest is not None:
                yield latest
            return
        pk = table_keys.workspace_pk(workspace)
        yield from self.ctx.table.query_all(Query(pk, sk_prefix=table_keys.model_versions_prefix(model["name"]),
                                                  forward=False, limit=100,
                                                  start={"pk": pk, "sk": after_sk} if after_sk else None))

    def download_urls(self, workspace: str, name: str, version: str) -> dict:
        _, item = self._find(workspace, name, version)
        expires = self.ctx.settings.presign_seconds
        return {"files": [{**f, "url": self.ctx.blobs.presign_get(item["blob_prefix"] + f["path"], expires)}
                          for f in item["files"]]}

    # --- changing -------------------------------------------------------------------------------
    def update_version(self, workspace: str, name: str, version: str, *, tags: dict | None = None,
                       remove_tags: list | None = None, properties: dict | None = None,
                       description: str | None = None) -> dict:
        """Tags change freely; a property may be set again to the same value only (409 otherwise)."""
        model, item = self._find(workspace, name, version)
        tags, properties = version_entries(tags, "tags"), version_entries(properties, "properties")
        remove = remove_tags or []
        if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
            raise Invalid("remove_tags must be a list of tag keys", field="remove_tags")
        if both := sorted(set(tags) & set(remove)):
            raise Invalid(f"tag {both[0]!r} is both set and removed", field="remove_tags")
        kept = {k: v for k, v in {**item["tags"], **tags}.items() if k not in remove}
        check_room(kept, "tags")
        check_room({**item["properties"], **properties}, "properties")
        for key, value in properties.items():
            check_property(item, key, value)
        changes: dict = {("tags", k): v for k, v in tags.items()}
        changes.update({("properties", k): v for k, v in properties.items()})
        if description is not None:
            changes["description"] = check_text(description, "description", MAX_DESCRIPTION)
        if not changes and not remove:
            return version_view(model, item)
        condition = all_of(item_exists(), *(attr_absent_or_eq(("properties", k), v) for k, v in properties.items()))
        update = Update(table_keys.model_version(workspace, name, item["version"]), set=changes,
                        remove=[("tags", k) for k in remove], condition=condition)
        try:
            new = self.ctx.table.update(update)
        except ConditionFailed:
            current = self.ctx.table.get_item(update.key)
            if current is None:
                raise NotFound(f"model {name}:{item['version']} not found") from None
            for key, value in properties.items():
                check_property(current, key, value)
            raise Conflict(f"model {name}:{item['version']} changed meanwhile; retry") from None
        return version_view(model, new)

    def delete_version(self, principal: Principal, workspace: str, name: str, version: str) -> dict:
        """Refused while a deployment uses the version; aliases on it go too (recorded in their history)."""
        number = parse_version(version)
        key = table_keys.model_version(workspace, name, number)
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
                operations.append(Update(table_keys.model(workspace, name), remove=[("aliases", a) for a in pointing],
                                         add={"alias_moves": len(pointing)},
                                         condition=all_of(attr_absent_or_eq("alias_moves", moves),
                                                          *(attr_eq(("aliases", a), number) for a in pointing))))
                operations += [self._history(workspace, name, moves + 1 + i, a, number, None, principal.user)
                               for i, a in enumerate(pointing)]
            operations.append(Audit(self.ctx).entry(principal, workspace, "model_version.deleted", f"{name}:{number}",
                                                    {"aliases": pointing}))
            try:
                self.ctx.table.transact(operations)
                break
            except ConditionFailed:
                time.sleep(contention_pause(attempt))  # used, deleted or re-aliased meanwhile: look again
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
        moves = self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace),
                                               sk_prefix=table_keys.model_alias_moves_prefix(name)))
        return {"aliases": model.get("aliases", {}),
                "history": [{"alias": m["alias"], "from": m["from"], "to": m["to"], "by": m["by"], "at": m["at"]}
                            for m in moves]}

    def _move_alias(self, principal: Principal, workspace: str, name: str, alias: str, target: int | None) -> dict:
        model_key = table_keys.model(workspace, name)
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
                operations.append(Check(table_keys.model_version(workspace, name, target), item_exists()))
            try:
                self.ctx.table.transact(operations)
            except ConditionFailed as failure:
                if failure.index == 2:
                    raise NotFound(f"model {name}:{target} not found", field="version") from None
                time.sleep(contention_pause(attempt))
                continue
            return {"alias": alias, "version": target, "previous": previous}
        raise Unavailable(f"alias {alias!r} of model {name!r} keeps moving; retry")

    def _history(self, workspace: str, name: str, sequence: int, alias: str, previous: int | None,
                 target: int | None, by: str) -> Put:
        key = table_keys.model_alias_move(workspace, name, sequence)
        return Put({"pk": key.pk, "sk": key.sk, "entity": "model_alias_move", "name": name, "alias": alias,
                    "from": previous, "to": target, "by": by, "at": self.ctx.now()}, item_absent())

    # --- in use by deployments (called by the deployments service) -------------------------------
    def use_operations(self, workspace: str, name: str, version: int, deployment_key: str,
                       item: dict | None = None) -> list[Operation]:
        """The writes that mark `deployment_key` ('<endpoint>/<deployment>') as using name:version.

        Computed from the version as read now (or as the caller read it: `item`): when the deployment is
        already in its map the answer is a Check that it still is (no double count); otherwise an Update
        adding it and `deployment_count + 1` under the condition that the entry is still absent. A
        ConditionFailed on these means a concurrent change: call again and retry the transaction. Raises
        NotFound when the version does not exist.
        """
        key = table_keys.model_version(workspace, name, int(version))
        item = item if item is not None else self.ctx.table.get_item(key)
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
        key = table_keys.model_version(workspace, name, int(version))
        item = self.ctx.table.get_item(key)
        entry = ("deployments", deployment_key)
        if item is None or deployment_key not in item.get("deployments", {}):
            return []
        return [Update(key, remove=[entry], add={"deployment_count": -1}, condition=attr_eq(entry, True))]

    # --- helpers --------------------------------------------------------------------------------
    def _model(self, workspace: str, name: str) -> dict:
        check_model_name(name)
        model = self.ctx.table.get_item(table_keys.model(workspace, name))
        if model is None:
            raise NotFound(f"model {name!r} not found in workspace {workspace!r}")
        return model

    def _latest(self, workspace: str, name: str) -> dict | None:
        """The highest existing version (the counter may name a deleted one)."""
        page = self.ctx.table.query(Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.model_versions_prefix(name),
                                          forward=False, limit=1))
        return page.items[0] if page.items else None

    def _find(self, workspace: str, name: str, version: Any, field: str = "version") -> tuple[dict, dict]:
        """(model item, version item) for a version number, an alias or 'latest'."""
        model = self._model(workspace, name)
        text = str(version)
        if text == "latest":
            item = self._latest(workspace, name)
        elif text.isascii() and text.isdigit():
            item = self.ctx.table.get_item(table_keys.model_version(workspace, name, parse_version(text, field)))
        elif ALIAS_NAME.fullmatch(text):
            number = model.get("aliases", {}).get(text)
            if number is None:
                raise NotFound(f"model {name!r} has no alias {text!r}")
            item = self.ctx.table.get_item(table_keys.model_version(workspace, name, int(number)))
        else:
            raise Invalid(f"{field} {text!r} must be a version number, an alias or 'latest'", field=field)
        if item is None:
            raise NotFound(f"model {name}:{text} not found in workspace {workspace!r}")
        return model, item


def model_files_of(item: dict) -> ModelFiles:
    """What a deployment needs of a stored version (its blob prefix stays inside the service)."""
    return ModelFiles(item["name"], int(item["version"]), item["asset_path"], item["blob_prefix"],
                      tuple((f["path"], int(f["size"])) for f in item["files"]))


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


def _check_unused(item: dict) -> None:
    if int(item.get("deployment_count") or 0) > 0:
        users = sorted(item.get("deployments", {}))
        raise Conflict(f"model {item['name']}:{item['version']} is used by deployment(s) {', '.join(users)}; "
                       "delete them or move them to another version first", field="version",
                       details={"deployments": users})
