"""Workspaces and their members. Roles: reader < contributor < owner, checked on every route."""
from __future__ import annotations

import secrets
from typing import Callable

from chalicelib.errors import Conflict, Forbidden, NotFound
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.roles import capped, check_role, rank
from chalicelib.domain.validation import check_name, WORKSPACE_NAME, WORKSPACE_RULE
from chalicelib.services.audit import Audit
from chalicelib.services.compute_targets import LOCAL, ComputeTargets
from chalicelib.services.identity import Identity, Principal
from chalicelib.services.runs import Runs
from chalicelib.store.table import (
    Check, ConditionFailed, Delete, Key, Put, Query, Update, attr_eq, attr_gt, item_absent, item_exists,
)

# Partitions a workspace holds besides its members; any of them blocks a plain delete.
_CONTENT_PREFIXES = ("EXP#", "SNAPSHOT#", "MODEL#", "ENDPOINT#", "COMPUTE#", "ENVNAME#", "SECRET#", "DATASTORE#",
                     "DATASET#")


class Workspaces:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def authorize(self, principal: Principal, workspace: str, minimum: str = "reader") -> dict:
        """The caller's membership, its `role` capped by a scoped token's ceiling; 404 when not a member
        (the workspace's existence stays private), 403 for a token scoped to another workspace."""
        check_scope(principal, workspace)
        member = self.ctx.table.get_item(table_keys.member(workspace, principal.user))
        if member is None:
            raise NotFound(f"workspace {workspace!r} not found")
        role = capped(member["role"], principal.max_role)
        if rank(role) < rank(minimum):
            because = f"this token is capped at {role}" if role != member["role"] else f"you are {role}"
            raise Forbidden(f"this needs the {minimum} role on workspace {workspace!r}; {because}")
        return {**member, "role": role}

    def create(self, principal: Principal, name: str, description: str = "") -> dict:
        if principal.workspace is not None:
            raise Forbidden(f"a token scoped to workspace {principal.workspace!r} cannot create workspaces")
        check_name(name, WORKSPACE_NAME, "name", WORKSPACE_RULE)
        key = table_keys.workspace(name)
        now = self.ctx.now()
        item = {"pk": key.pk, "sk": key.sk, "entity": "workspace", "name": name, "description": description,
                "id": secrets.token_hex(8), "created": now, "created_by": principal.user, "owners": 1}
        item["blob_prefix"] = f"workspaces/{name}-{item['id']}/"
        try:
            self.ctx.table.transact([
                Put(item, item_absent()), self._member_put(name, principal.user, "owner", principal),
                Audit(self.ctx).entry(principal, name, "workspace.created", name, {"description": description},
                                      workspace_id=item["id"]),
            ])
        except ConditionFailed:
            raise Conflict(f"workspace {name!r} already exists", field="name") from None
        return workspace_view(item, "owner")

    def get(self, principal: Principal, name: str) -> dict:
        member = self.authorize(principal, name)
        item = self.ctx.table.get_item(table_keys.workspace(name))
        if item is None:
            raise NotFound(f"workspace {name!r} not found")
        return workspace_view(item, member["role"])

    def record(self, name: str) -> dict:
        """The stored workspace, for other services (no access check)."""
        item = self.ctx.table.get_item(table_keys.workspace(name))
        if item is None:
            raise NotFound(f"workspace {name!r} not found")
        return item

    def list(self, principal: Principal) -> list[dict]:
        """The caller's workspaces; a scoped token sees its one workspace, with its capped role."""
        memberships = self.ctx.table.query_all(Query(table_keys.tokens_of_index_pk(principal.user), index="gsi1", sk_prefix="WS#"))
        return [{"name": m["workspace"], "role": capped(m["role"], principal.max_role)} for m in memberships
                if principal.workspace in (None, m["workspace"])]

    def delete(self, principal: Principal, name: str, force: bool = False, targets: ComputeTargets | None = None,
               stop_run: Callable[[str, dict], object] | None = None) -> dict:
        """Deletes an empty workspace; with `force`, everything in it. A forced delete first ends the
        workspace's active runs (canceled; `stop_run(workspace, run)` stops each one's job) and deletes its
        compute targets with the AWS Batch resources Nimbus made for them, through `targets` (whose
        provisioner does it: without one, a target with such resources refuses the delete rather than
        leaving them behind). A failure there leaves the workspace in place, to be deleted again."""
        self.authorize(principal, name, "owner")
        if not force:
            for prefix in _CONTENT_PREFIXES:
                if self.ctx.table.query(Query(table_keys.workspace_pk(name), sk_prefix=prefix, limit=1)).items:
                    raise Conflict(f"workspace {name!r} is not empty; delete with force to remove everything in it")
        removed_targets = 0
        if force:
            def end_runs(run_ids: list[str]) -> None:
                self._end_runs(name, run_ids, stop_run)

            end_runs([i["sk"] for i in self.ctx.table.query_all(Query(table_keys.active_runs_pk(name, LOCAL)))])
            removed_targets = (targets or ComputeTargets(self.ctx)).delete_all(name, end_runs, principal)
        record = self.record(name)
        # The META item goes first, conditionally: a concurrent delete or re-create cannot interleave. The
        # audit log is kept: it is keyed by the workspace's id, out of the partitions deleted below.
        deleted = Audit(self.ctx).entry(principal, name, "workspace.deleted", name, {"force": force},
                                        workspace_id=record["id"])
        self.ctx.table.transact([Delete(Key(record["pk"], record["sk"]), attr_eq("id", record["id"])), deleted])
        removed_runs = self._delete_runs(name)
        members = list(self.ctx.table.query_all(Query(table_keys.workspace_pk(name))))
        self.ctx.table.batch_delete([Key(i["pk"], i["sk"]) for i in members])
        blobs = self.ctx.blobs.delete_prefix(record["blob_prefix"])
        return {"name": name, "deleted": True, "runs": removed_runs, "blobs": blobs, "compute_targets": removed_targets}

    def _end_runs(self, name: str, run_ids: list[str], stop_run: Callable[[str, dict], object] | None) -> None:
        runs = Runs(self.ctx)
        for run_id in run_ids:
            try:
                run = runs.transition(name, run_id, "Canceled", {"message": f"workspace {name!r} was deleted"})
            except (Conflict, NotFound):
                continue  # it ended meanwhile
            if stop_run is not None:
                stop_run(name, run)

    def _delete_runs(self, name: str) -> int:
        count = 0
        for experiment in self.ctx.table.query_all(Query(table_keys.workspace_pk(name), sk_prefix="EXP#")):
            runs = self.ctx.table.query_all(Query(table_keys.experiment_runs_index_pk(name, experiment["name"]), index="gsi1"))
            for run in list(runs):
                items = list(self.ctx.table.query_all(Query(table_keys.run_pk(run["id"]))))
                self.ctx.table.batch_delete([Key(i["pk"], i["sk"]) for i in items])
                count += 1
        return count

    # --- members --------------------------------------------------------------------------------
    def add_member(self, principal: Principal, workspace: str, user: str, role: str) -> dict:
        """Add a member or change their role; the owner count on the workspace keeps one owner at least."""
        self.authorize(principal, workspace, "owner")
        check_role(role)
        Identity(self.ctx).get_user(user)
        current = self.ctx.table.get_item(table_keys.member(workspace, user))
        op = self._member_put(workspace, user, role, principal)
        op.condition = item_absent() if current is None else attr_eq("role", current["role"])
        was_owner, is_owner = current is not None and current["role"] == "owner", role == "owner"
        if current is None:
            audited = Audit(self.ctx).entry(principal, workspace, "member.added", user, {"role": role})
        else:
            audited = Audit(self.ctx).entry(principal, workspace, "member.role_changed", user,
                                            {"from": current["role"], "to": role})
        self._change_members(workspace, user, op, is_owner - was_owner, audited)
        return member_view(op.item)

    def list_members(self, principal: Principal, workspace: str) -> list[dict]:
        self.authorize(principal, workspace)
        query = Query(table_keys.workspace_pk(workspace), sk_prefix="MEMBER#")
        return [member_view(i) for i in self.ctx.table.query_all(query)]

    def remove_member(self, principal: Principal, workspace: str, user: str) -> None:
        check_scope(principal, workspace)
        # Anyone may leave; only owners remove others. A token capped below owner changes no membership,
        # its own user's included: leaving is its user's decision, not a CI job's.
        if principal.user != user or principal.max_role not in (None, "owner"):
            self.authorize(principal, workspace, "owner")
        member = self.ctx.table.get_item(table_keys.member(workspace, user))
        if member is None:
            raise NotFound(f"user {user!r} is not a member of {workspace!r}")
        delete = Delete(table_keys.member(workspace, user), attr_eq("role", member["role"]))
        audited = Audit(self.ctx).entry(principal, workspace, "member.removed", user, {"role": member["role"]})
        self._change_members(workspace, user, delete, -1 if member["role"] == "owner" else 0, audited)

    def _change_members(self, workspace: str, user: str, op: Put | Delete, owner_delta: int, audited: Put) -> None:
        """One transaction: the member write, the workspace's owner count (never below one) and the entry."""
        guard = attr_gt("owners", 1) if owner_delta < 0 else item_exists()
        key = table_keys.workspace(workspace)
        count = Update(key, add={"owners": owner_delta}, condition=guard) if owner_delta else Check(key, guard)
        try:
            self.ctx.table.transact([op, count, audited])
        except ConditionFailed as failure:
            if failure.index == 1 and owner_delta < 0:
                raise Conflict(f"{user!r} is the last owner of {workspace!r}; add another owner first",
                               field="role") from None
            if failure.index == 1:
                raise NotFound(f"workspace {workspace!r} not found") from None
            raise Conflict(f"the membership of {user!r} changed meanwhile; retry") from None

    def _member_put(self, workspace: str, user: str, role: str, by: Principal) -> Put:
        key = table_keys.member(workspace, user)
        return Put({"pk": key.pk, "sk": key.sk, "entity": "member", "workspace": workspace, "user": user,
                    "role": role, "added": self.ctx.now(), "added_by": by.user,
                    "gsi1pk": table_keys.tokens_of_index_pk(user), "gsi1sk": f"WS#{workspace}"})


def check_scope(principal: Principal, workspace: str) -> None:
    """A run token or a scoped token acts on its own workspace only."""
    if principal.workspace is not None and principal.workspace != workspace:
        raise Forbidden(f"this token is scoped to workspace {principal.workspace!r}")


def workspace_view(item: dict, role: str) -> dict:
    return {"name": item["name"], "description": item.get("description", ""), "created": item["created"],
            "created_by": item["created_by"], "role": role}


def member_view(item: dict) -> dict:
    return {"user": item["user"], "role": item["role"], "added": item["added"], "added_by": item["added_by"]}
