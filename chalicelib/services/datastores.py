"""Datastores: where a workspace's data lives, and how to reach it (docs/datasets.md, "Datastores").

Three types:
- `blob`: the workspace's own prefix of the platform's blob store. Every workspace has one,
  `workspaceblobstore`, built in (always listed, never stored, like compute target `local`), and it is the
  default datastore until another is set.
- `s3`: a bucket and prefix on S3 or any S3-compatible store (`endpoint_url`), reached with the
  platform's (or the job's) role, or with an access key pair.
- `local`: a folder on the platform's machine, under one of the roots its settings list
  (`NIMBUS_DATASTORE_ROOTS`); only a platform admin registers one, since it reaches the platform's disk.

An access key pair is kept as two workspace secrets (`workspace_secrets.py`) whose names the datastore
records: never in the table, never in an answer. Registering first checks the connection (one listing
under the prefix, through the `DatastoreAccess` port); when that fails nothing is saved.
"""
from __future__ import annotations

import re
import secrets
from pathlib import PurePosixPath
from typing import Any, Protocol

from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.validation import check_name
from chalicelib.errors import Conflict, Forbidden, Invalid, NotFound
from chalicelib.services.audit import Audit
from chalicelib.services.identity import Principal
from chalicelib.services.workspace_secrets import WorkspaceSecrets
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.blobs import Blobs
from chalicelib.store.table import (
    Check, ConditionFailed, Delete, Key, Put, Query, Update, attr_absent, attr_eq, item_absent, item_exists,
)

DEFAULT_NAME = "workspaceblobstore"
TYPES = ("blob", "s3", "local")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,254}")
NAME_RULE = "1-255 characters: letters, digits and '_', starting with a letter"
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
BUCKET_RULE = "3-63 characters: lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
KEY_NAMES = ("access_key_id", "secret_access_key")
MAX_PREFIX = 512


class DatastoreAccess(Protocol):
    """The port to the stores behind datastores (chalicelib/store/datastore_access.py)."""

    def open(self, location: dict, credentials: dict | None) -> Blobs:
        """A Blobs view of the store: keys are full keys (the location's prefix included)."""

    def check(self, location: dict, credentials: dict | None) -> None:
        """One listing under the location's prefix; raises Invalid naming the store's error code."""


def check_prefix(prefix: str | None, field: str = "prefix") -> str:
    """A relative POSIX folder ('' for the store's root), kept without its trailing '/'."""
    if prefix is None or prefix == "":
        return ""
    if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX:
        raise Invalid(f"{field} must be a string of at most {MAX_PREFIX} characters", field=field)
    stripped = prefix.strip("/") if not prefix.startswith("/") else prefix
    parts = stripped.split("/")
    if (prefix.startswith("/") or "\\" in prefix or any(ord(c) < 32 or ord(c) == 127 for c in prefix)
            or any(p in ("", ".", "..") for p in parts)):
        raise Invalid(f"{field} {prefix!r} must be a relative path of names, without '..', '.', empty parts, "
                      "backslashes or control characters", field=field)
    return stripped


def datastore_view(item: dict, default_name: str) -> dict:
    """What anyone in the workspace may see of a datastore: never a credential, only which kind is set."""
    view = {"name": item["name"], "type": item["type"], "description": item.get("description", ""),
            "settings": dict(item.get("settings") or {}), "credential": item.get("credential", "none"),
            "is_default": item["name"] == default_name, "created": item.get("created"),
            "created_by": item.get("created_by"), "updated": item.get("updated")}
    if item.get("credential_secrets"):
        view["credential_secrets"] = dict(item["credential_secrets"])  # names in the secret store, not values
    return view


def _builtin(workspace: dict) -> dict:
    return {"name": DEFAULT_NAME, "type": "blob", "description": "the workspace's own prefix of the platform's "
            "blob store", "settings": {}, "credential": "platform", "created": workspace["created"],
            "created_by": workspace["created_by"], "updated": None}


class Datastores:
    def __init__(self, ctx: Context, access: DatastoreAccess | None, workspace_secrets: WorkspaceSecrets,
                 local_roots: tuple[str, ...] = ()):
        self.ctx = ctx
        self.access = access
        self.workspace_secrets = workspace_secrets
        self.local_roots = tuple(str(PurePosixPath(root)) for root in local_roots)

    # --- reads ----------------------------------------------------------------------------------
    def list(self, workspace: str) -> list[dict]:
        record = Workspaces(self.ctx).record(workspace)
        default = record.get("default_datastore") or DEFAULT_NAME
        query = Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.DATASTORE_PREFIX)
        return [datastore_view(_builtin(record), default)] + [
            datastore_view(item, default) for item in self.ctx.table.query_all(query)]

    def get(self, workspace: str, name: str) -> dict:
        record = Workspaces(self.ctx).record(workspace)
        return datastore_view(self.record(workspace, name, record), record.get("default_datastore") or DEFAULT_NAME)

    def record(self, workspace: str, name: str, workspace_record: dict | None = None) -> dict:
        """The stored datastore (the built-in one made up), for other services."""
        check_name(name, NAME, "name", NAME_RULE)
        if name == DEFAULT_NAME:
            return _builtin(workspace_record or Workspaces(self.ctx).record(workspace))
        item = self.ctx.table.get_item(table_keys.datastore(workspace, name))
        if item is None:
            Workspaces(self.ctx).record(workspace)  # an unknown workspace is named as such
            raise NotFound(f"no datastore {name!r} in workspace {workspace!r}", field="datastore")
        return item

    def default(self, workspace: str) -> dict:
        record = Workspaces(self.ctx).record(workspace)
        return self.get(workspace, record.get("default_datastore") or DEFAULT_NAME)

    # --- register -------------------------------------------------------------------------------
    def register(self, principal: Principal, workspace: str, name: str, kind: str, settings: dict[str, Any],
                 credentials: dict[str, str] | None = None, description: str = "", overwrite: bool = False) -> dict:
        """Checks the connection, keeps the credentials in the secret store, then writes the datastore.
        `overwrite` replaces a datastore of that name (Azure ML's `overwrite=True`); otherwise 409."""
        check_name(name, NAME, "name", NAME_RULE)
        if name == DEFAULT_NAME:
            raise Conflict(f"datastore {DEFAULT_NAME!r} is built in; choose another name", field="name")
        if kind not in TYPES or kind == "blob":
            raise Invalid("type must be s3 or local (each workspace has its blob datastore built in)", field="type")
        if description is not None and len(description) > 5000:
            raise Invalid("description must be at most 5000 characters", field="description")
        record = Workspaces(self.ctx).record(workspace)
        location = self._location(principal, kind, settings, credentials)
        key = table_keys.datastore(workspace, name)
        existing = self.ctx.table.get_item(key)
        if existing is not None and not overwrite:
            raise Conflict(f"datastore {name!r} already exists in workspace {workspace!r}; register it with "
                           "overwrite to replace it", field="name")
        self._access().check(location, credentials)
        now = self.ctx.now()
        item = {"pk": key.pk, "sk": key.sk, "entity": "datastore", "workspace": workspace, "name": name,
                "type": kind, "settings": location["settings"], "description": description or "",
                "credential": "access_key" if credentials else ("role" if kind == "s3" else "none"),
                "credential_secrets": None, "created": now if existing is None else existing["created"],
                "created_by": principal.user if existing is None else existing["created_by"], "updated": now,
                "dataset_versions": 0 if existing is None else existing.get("dataset_versions", 0)}
        stored = self._store_credentials(principal, workspace, credentials) if credentials else None
        item["credential_secrets"] = stored
        condition = item_absent() if existing is None else attr_eq("updated", existing["updated"])
        action = "datastore.registered" if existing is None else "datastore.replaced"
        try:
            self.ctx.table.transact([
                Put(item, condition), Check(table_keys.workspace(workspace), attr_eq("id", record["id"])),
                Audit(self.ctx).entry(principal, workspace, action, name,
                                      {"type": kind, "credential": item["credential"]}, workspace_id=record["id"]),
            ])
        except ConditionFailed as failure:
            self._forget_credentials(principal, workspace, stored)
            if failure.index == 1:
                raise NotFound(f"workspace {workspace!r} not found") from None
            raise Conflict(f"datastore {name!r} was registered or changed meanwhile; retry", field="name") from None
        if existing is not None:
            self._forget_credentials(principal, workspace, existing.get("credential_secrets"))
        return datastore_view(item, record.get("default_datastore") or DEFAULT_NAME)

    def update_credentials(self, principal: Principal, workspace: str, name: str,
                           credentials: dict[str, str] | None) -> dict:
        """New access keys (or None: the platform's role), checked against the store before they replace
        the old ones."""
        item = self.record(workspace, name)
        if item["type"] != "s3":
            raise Invalid(f"datastore {name!r} is of type {item['type']}: only s3 datastores take credentials",
                          field="name")
        self._check_credentials(credentials)
        location = {"type": "s3", "settings": item["settings"]}
        self._access().check(location, credentials)
        stored = self._store_credentials(principal, workspace, credentials) if credentials else None
        update = Update(Key(item["pk"], item["sk"]), condition=attr_eq("updated", item["updated"]),
                        set={"credential": "access_key" if credentials else "role", "credential_secrets": stored,
                             "updated": self.ctx.now()})
        try:
            self.ctx.table.transact([update, Audit(self.ctx).entry(
                principal, workspace, "datastore.credentials_updated", name,
                {"credential": "access_key" if credentials else "role"})])
        except ConditionFailed:
            self._forget_credentials(principal, workspace, stored)
            raise Conflict(f"datastore {name!r} changed meanwhile; retry", field="name") from None
        self._forget_credentials(principal, workspace, item.get("credential_secrets"))
        return self.get(workspace, name)

    def set_default(self, principal: Principal, workspace: str, name: str) -> dict:
        record = Workspaces(self.ctx).record(workspace)
        self.record(workspace, name, record)
        operations = [Update(table_keys.workspace(workspace), set={"default_datastore": name},
                             condition=attr_eq("id", record["id"])),
                      Audit(self.ctx).entry(principal, workspace, "datastore.default_set", name,
                                            {"from": record.get("default_datastore") or DEFAULT_NAME},
                                            workspace_id=record["id"])]
        if name != DEFAULT_NAME:  # still registered when the workspace points at it
            operations.append(Check(table_keys.datastore(workspace, name), item_exists()))
        try:
            self.ctx.table.transact(operations)
        except ConditionFailed as failure:
            if failure.index == 0:
                raise NotFound(f"workspace {workspace!r} not found") from None
            raise NotFound(f"no datastore {name!r} in workspace {workspace!r}", field="name") from None
        return self.get(workspace, name)

    def delete(self, principal: Principal, workspace: str, name: str) -> dict:
        """Refused for the built-in datastore, the workspace's default, and while a registered dataset
        version references the datastore."""
        record = Workspaces(self.ctx).record(workspace)
        item = self.record(workspace, name, record)
        if name == DEFAULT_NAME:
            raise Conflict(f"datastore {DEFAULT_NAME!r} is built in and cannot be deleted", field="name")
        if (record.get("default_datastore") or DEFAULT_NAME) == name:
            raise Conflict(f"datastore {name!r} is the workspace's default; set another default first", field="name")
        if item.get("dataset_versions"):
            raise Conflict(f"datastore {name!r} is referenced by {item['dataset_versions']} registered dataset "
                           f"version(s) ({self._referencing(workspace, name)}); unregister them first", field="name")
        current_default = record.get("default_datastore")
        default_unchanged = (attr_eq("default_datastore", current_default) if current_default
                             else attr_absent("default_datastore"))
        try:
            self.ctx.table.transact([
                Delete(Key(item["pk"], item["sk"]), attr_eq("dataset_versions", 0)),
                Check(table_keys.workspace(workspace), default_unchanged),
                Audit(self.ctx).entry(principal, workspace, "datastore.deleted", name, {"type": item["type"]},
                                      workspace_id=record["id"]),
            ])
        except ConditionFailed:
            raise Conflict(f"datastore {name!r} changed meanwhile (a dataset registered on it, or it became the "
                           "default); retry", field="name") from None
        self._forget_credentials(principal, workspace, item.get("credential_secrets"))
        return {"name": name, "deleted": True}

    # --- helpers --------------------------------------------------------------------------------
    def _referencing(self, workspace: str, name: str) -> str:
        """The dataset versions that read a datastore, named for a refusal (one partition's Query)."""
        query = Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.DATASET_VERSION_PREFIX)
        found = [f"{item['name']}:{item['version']}" for item in self.ctx.table.query_all(query)
                 if name in item.get("datastores", ())]
        return ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")

    def _location(self, principal: Principal, kind: str, settings: dict[str, Any],
                  credentials: dict[str, str] | None) -> dict:
        if not isinstance(settings, dict):
            raise Invalid("settings must be an object", field="settings")
        if kind == "s3":
            return {"type": "s3", "settings": self._s3_settings(settings, credentials)}
        if credentials:
            raise Invalid("a local datastore takes no credentials", field="credentials")
        return {"type": "local", "settings": self._local_settings(principal, settings)}

    def _s3_settings(self, settings: dict, credentials: dict[str, str] | None) -> dict:
        unknown = set(settings) - {"bucket", "prefix", "region", "endpoint_url"}
        if unknown:
            raise Invalid(f"unknown s3 setting {sorted(unknown)[0]!r}: bucket, prefix, region, endpoint_url",
                          field=f"settings.{sorted(unknown)[0]}")
        bucket = settings.get("bucket")
        check_name(bucket, BUCKET, "settings.bucket", BUCKET_RULE)
        region = settings.get("region") or self.ctx.settings.region
        if not isinstance(region, str) or not REGION.fullmatch(region):
            raise Invalid(f"settings.region {region!r} is not a region name such as us-east-1", field="settings.region")
        endpoint = settings.get("endpoint_url")
        if endpoint is not None and (not isinstance(endpoint, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?",
                                                                                       endpoint)):
            raise Invalid("settings.endpoint_url must be an http(s) URL", field="settings.endpoint_url")
        self._check_credentials(credentials)
        return {"bucket": bucket, "prefix": check_prefix(settings.get("prefix"), "settings.prefix"),
                "region": region, "endpoint_url": endpoint.rstrip("/") if endpoint else None}

    def _local_settings(self, principal: Principal, settings: dict) -> dict:
        if not principal.is_admin:
            raise Forbidden("only a platform admin registers local datastores: they reach the platform's disk")
        if self.ctx.settings.backend != "local":
            raise Invalid("local datastores exist on the local platform only", field="type")
        unknown = set(settings) - {"path"}
        if unknown:
            raise Invalid(f"unknown local setting {sorted(unknown)[0]!r}: path", field=f"settings.{sorted(unknown)[0]}")
        path = settings.get("path")
        if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
            raise Invalid("settings.path must be an absolute folder path", field="settings.path")
        if not self.local_roots:
            raise Invalid("the platform lists no roots for local datastores (NIMBUS_DATASTORE_ROOTS)",
                          field="settings.path")
        for root in self.local_roots:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                relative = path[len(root):].strip("/")
                return {"root": root, "path": check_prefix(relative, "settings.path") if relative else ""}
        raise Invalid(f"settings.path {path!r} is not under a root the platform allows: "
                      f"{', '.join(self.local_roots)}", field="settings.path")

    @staticmethod
    def _check_credentials(credentials: dict[str, str] | None) -> None:
        if credentials is None:
            return
        if not isinstance(credentials, dict) or set(credentials) != set(KEY_NAMES):
            raise Invalid("credentials must hold access_key_id and secret_access_key", field="credentials")
        for field in KEY_NAMES:
            value = credentials[field]
            if not isinstance(value, str) or not value.strip() or len(value) > 1024:
                raise Invalid(f"credentials.{field} must be a non-empty string", field=f"credentials.{field}")

    def _store_credentials(self, principal: Principal, workspace: str, credentials: dict[str, str]) -> dict:
        """Each key under a name of its own: a run masks each value in its log."""
        stem = f"datastore-{secrets.token_hex(6)}"
        names = {field: f"{stem}-{field.replace('_', '-')}" for field in KEY_NAMES}
        for field, secret_name in names.items():
            self.workspace_secrets.set(principal, workspace, secret_name, credentials[field])
        return names

    def _forget_credentials(self, principal: Principal, workspace: str, names: dict | None) -> None:
        for secret_name in (names or {}).values():
            try:
                self.workspace_secrets.delete(workspace, secret_name, by=principal)
            except NotFound:
                pass  # deleted by hand meanwhile: nothing left to forget

    def credentials(self, workspace: str, item: dict) -> dict[str, str] | None:
        """The access key pair of a datastore, for the service itself (listing, presigning)."""
        names = item.get("credential_secrets")
        if not names:
            return None
        return {field: self.workspace_secrets.read(workspace, names[field]) for field in KEY_NAMES}

    def _access(self) -> DatastoreAccess:
        if self.access is None:
            raise Invalid("this deployment reaches no external stores", field="type")
        return self.access
