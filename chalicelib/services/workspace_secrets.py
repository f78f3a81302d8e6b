"""A workspace's secrets (Azure ML's workspace Key Vault): contributors set, list and delete them; only a
run, through its run token, reads a value (docs/execution.md, "Secrets").

Two stores hold a secret: its value sits in the Secrets port under a name in the workspace's own
namespace (`workspace-secrets/<workspace>/<name>`, apart from endpoint keys and from other workspaces),
and a table item per name (`SECRET#<name>`) says who set it and when, so listing never reads a value.
No transaction spans the two, so each write is ordered to fail safe:
- set writes the value first, then the item (a failure between leaves a value nobody can read, since a
  read needs the item; setting again repairs it);
- delete removes the item first (reads stop at once), then the value; deleting again removes a value
  left behind by a failure between the two.
"""
from __future__ import annotations

import re

from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.validation import check_name
from chalicelib.errors import NimbusError, NotFound
from chalicelib.services.audit import Audit
from chalicelib.services.identity import Principal
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.secrets import Secrets
from chalicelib.store.table import Query, Update

# Azure Key Vault's rule for secret names; no '#' or '/', so neither keys nor store names can collide.
SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,126}")
SECRET_RULE = "1-127 characters: letters, digits and '-', starting with a letter or digit"
STORE_PREFIX = "workspace-secrets/"


def check_secret_name(name: str, field: str = "name") -> str:
    return check_name(name, SECRET_NAME, field, SECRET_RULE)


def store_name(workspace: str, name: str) -> str:
    """The secret's name in the Secrets port: workspace names hold no '/', so namespaces never overlap."""
    return f"{STORE_PREFIX}{workspace}/{name}"


def secret_view(item: dict) -> dict:
    return {"name": item["name"], "created": item["created"], "created_by": item["created_by"],
            "updated": item["updated"], "updated_by": item["updated_by"], "version": item["version"]}


class WorkspaceSecrets:
    def __init__(self, ctx: Context, secrets: Secrets | None):
        self.ctx = ctx
        self._secrets = secrets

    def set(self, principal: Principal, workspace: str, name: str, value: str) -> dict:
        """Creates the secret or replaces its value; what is known of it afterwards (never the value)."""
        check_secret_name(name)
        Workspaces(self.ctx).record(workspace)
        self._store().put(store_name(workspace, name), value)
        now = self.ctx.now()
        key = table_keys.workspace_secret(workspace, name)
        item = self.ctx.table.update(Update(
            key, set={"updated": now, "updated_by": principal.user},
            set_if_absent={"entity": "secret", "workspace": workspace, "name": name, "created": now,
                           "created_by": principal.user},
            add={"version": 1}))
        # The value lives outside the table, so its entry follows the change rather than sharing its transaction
        Audit(self.ctx).record(principal, workspace, "secret.set", name, {"version": int(item["version"])})
        return secret_view(item)

    def list(self, workspace: str) -> dict:
        Workspaces(self.ctx).record(workspace)
        query = Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.SECRET_PREFIX)
        return {"secrets": [secret_view(item) for item in self.ctx.table.query_all(query)]}

    def delete(self, workspace: str, name: str, by: Principal | None = None) -> dict:
        check_secret_name(name)
        key = table_keys.workspace_secret(workspace, name)
        existed = self.ctx.table.get_item(key) is not None
        if existed:
            self.ctx.table.delete(key.pk, key.sk)
        self._store().delete(store_name(workspace, name))  # also when the item is gone: a value left behind
        if not existed:
            raise NotFound(f"no secret {name!r} in workspace {workspace!r}", field="name")
        Audit(self.ctx).record(by, workspace, "secret.deleted", name)
        return {"name": name, "deleted": True}

    def read(self, workspace: str, name: str, by: Principal | None = None) -> str:
        """The value, for a run of the workspace (the route checks the caller is one); `by` is on record."""
        check_secret_name(name)
        if self.ctx.table.get_item(table_keys.workspace_secret(workspace, name)) is None:
            raise NotFound(f"no secret {name!r} in workspace {workspace!r}", field="name")
        try:
            value = self._store().get(store_name(workspace, name))
        except NotFound:
            # Deleted meanwhile, or a set that wrote its item but lost its value to a concurrent delete.
            raise NotFound(f"secret {name!r} of workspace {workspace!r} has no value; set it again",
                           field="name") from None
        if by is not None:
            Audit(self.ctx).record(by, workspace, "secret.read", name)
        return value

    def delete_all(self, workspace: str) -> int:
        """Every secret of the workspace (a forced workspace delete). Values go first here: a failure leaves
        items behind, which the next forced delete finds again (a value without its item it could not)."""
        query = Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.SECRET_PREFIX)
        items = list(self.ctx.table.query_all(query))
        for item in items:
            self._store().delete(store_name(workspace, item["name"]))
            self.ctx.table.delete(item["pk"], item["sk"])
        return len(items)

    def _store(self) -> Secrets:
        if self._secrets is None:
            raise NimbusError("no secret store is wired for this service")
        return self._secrets
