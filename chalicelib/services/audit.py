"""Each workspace's audit log: who changed what, when, and through which token.

Append-only. An entry is written in the same transaction as the change it records wherever the change
is a table write (`entry` gives the Put to add to it); a change made outside the table (an endpoint key
kept in the secret store) is recorded right after it succeeds (`record`). Nothing updates or deletes an
entry: no route can, and deleting a workspace leaves its log in place (docs/api.md, "Audit log").
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.domain.validation import check_page_size, decode_page_token, encode_page_token, start_key
from chalicelib.errors import Invalid, NotFound
from chalicelib.store.table import Put, Query, item_absent

if TYPE_CHECKING:  # types only: identity writes entries of its own (token.created, token.revoked)
    from chalicelib.services.identity import Principal

# What the log records (docs/api.md, "Audit log"). `record` refuses any other action.
ACTIONS = frozenset({
    "workspace.created", "workspace.deleted",
    "member.added", "member.role_changed", "member.removed",
    "token.created", "token.revoked",
    "endpoint.keys_regenerated", "endpoint.deleted", "endpoint.traffic_changed",
    "deployment.created", "deployment.updated", "deployment.deleted",
    "compute.created", "compute.deleted",
    "model_version.registered", "model_version.deleted",
    "environment_version.created", "environment_version.replaced",
    "secret.set", "secret.deleted", "secret.read",
    "datastore.registered", "datastore.replaced", "datastore.credentials_updated", "datastore.default_set",
    "datastore.deleted", "dataset_version.registered", "dataset_version.deleted",
})
# Detail names that would hold a secret: an entry names what changed, never a credential's value.
_SECRET_DETAILS = frozenset({"token", "secret", "key", "keys", "primary", "secondary", "password", "value"})


class Audit:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def entry(self, principal: Principal | None, workspace: str, action: str, target: str,
              details: dict[str, Any] | None = None, *, workspace_id: str | None = None) -> Put:
        """The Put of one entry, to add to the transaction that makes the change. `principal` None: the
        platform itself (a sweep). `workspace_id` saves a read when the caller has the workspace at hand."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        secret = _SECRET_DETAILS.intersection(details or {})
        if secret:
            raise ValueError(f"audit details may not hold secret values: {sorted(secret)}")
        key = table_keys.audit_entry(workspace, workspace_id or self._workspace_id(workspace), new_id(self.ctx.clock))
        item = {"pk": key.pk, "sk": key.sk, "entity": "audit", "id": key.sk, "workspace": workspace,
                "at": self.ctx.now(), "actor": principal.user if principal else None,
                "actor_token_id": principal.token_id if principal else None,
                "actor_run_id": principal.run_id if principal else None,
                "action": action, "target": target, "details": dict(details or {})}
        return Put(item, item_absent())

    def record(self, principal: Principal | None, workspace: str, action: str, target: str,
               details: dict[str, Any] | None = None) -> dict:
        """Writes one entry now: for a change that is not a table write, right after it succeeded."""
        put = self.entry(principal, workspace, action, target, details)
        self.ctx.table.put(put.item, put.condition)
        return entry_view(put.item)

    def list(self, workspace: str, *, max_results: int = 100, page_token: str | None = None,
             action: str | None = None) -> dict:
        """Entries newest first, paged; `action` keeps one kind. The caller's access is checked by the route."""
        check_page_size(max_results)
        if action is not None and action not in ACTIONS:
            raise Invalid(f"action must be one of {', '.join(sorted(ACTIONS))}", field="action")
        pk = table_keys.audit_log_pk(workspace, self._workspace_id(workspace))
        start = start_key(decode_page_token(page_token), pk=pk)
        found: list[dict] = []
        while True:
            page = self.ctx.table.query(Query(pk, forward=False, limit=max_results, start=start))
            for item in page.items:
                if action is None or item["action"] == action:
                    found.append(item)
                    if len(found) == max_results:
                        last = {"pk": item["pk"], "sk": item["sk"]}
                        more = item is not page.items[-1] or page.next is not None
                        return {"entries": [entry_view(i) for i in found],
                                "next_page_token": encode_page_token({"k": last}) if more else None}
            if page.next is None:
                return {"entries": [entry_view(i) for i in found], "next_page_token": None}
            start = page.next

    def _workspace_id(self, workspace: str) -> str:
        item = self.ctx.table.get_item(table_keys.workspace(workspace))
        if item is None:
            raise NotFound(f"workspace {workspace!r} not found")
        return item["id"]


def entry_view(item: dict) -> dict:
    return {key: item[key] for key in ("id", "at", "actor", "actor_token_id", "actor_run_id", "action", "target",
                                       "details")}
