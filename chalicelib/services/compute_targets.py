"""Compute targets: where submitted runs execute (docs/compute.md, "Compute targets").

`local` is built in: always listed, never stored. A `batch` target's AWS resources are made by a
provisioner (the `Provisioner` port, cluster_lifecycle.py), so this module never talks to AWS; an `instance` target needs
nothing made. The item is written `Creating` before anything is provisioned, so two creates of one name
cannot both provision, and `Deleting` before anything is torn down, so no run can be submitted to a
target that is going away.

A `batch` target's cluster comes and goes step by step: chalicelib/services/cluster_lifecycle.py.
"""
from __future__ import annotations

import logging
import re
import secrets
from typing import Callable

from chalicelib.compute.instance_queue import slot_keys
from chalicelib.errors import Conflict, Invalid, NotFound
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.timestamps import parse_iso
from chalicelib.domain.validation import check_name
from chalicelib.services.audit import Audit
from chalicelib.services.cluster_lifecycle import (
    START_GRACE_S, ClusterLifecycle, Provisioner, pending_key, same_attempt,
)
from chalicelib.services.compute_settings import check_settings
from chalicelib.services.identity import Principal
from chalicelib.store.table import (
    Check, ConditionFailed, Put, Query, Update, all_of, any_of, attr_absent, attr_eq, item_absent, item_exists,
)

log = logging.getLogger(__name__)

LOCAL = "local"
NAME = re.compile(r"[a-z][a-z0-9-]{1,31}")
NAME_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter"
ACTIVE_RUNS_NAMED = 5  # a refused delete names at most this many of the target's active runs
_LOCAL_VIEW = {"name": LOCAL, "type": "local", "settings": {}, "state": "Succeeded", "created": None,
               "created_by": None}


class ComputeTargets:
    def __init__(self, ctx: Context, provisioner: Provisioner | None = None):
        self.ctx = ctx
        self.provisioner = provisioner
        self.lifecycle = ClusterLifecycle(ctx, provisioner)

    def refresh(self, workspace: str, item: dict) -> dict:
        """The item with its creation, cleanup or deletion taken as far as it goes now (cluster_lifecycle.py)."""
        return self.lifecycle.refresh(workspace, item)

    def sweep(self) -> dict[str, int]:
        """Every unfinished creation, cleanup and deletion a step further (the 5-minute schedule calls it)."""
        return self.lifecycle.sweep()

    # --- create ---------------------------------------------------------------------------------
    def create(self, principal: Principal, workspace: str, name: str, kind: str, settings: dict | None) -> dict:
        """The new target: Succeeded at once for instance targets and attached queues; Creating while a
        cluster Nimbus makes is on its way (its later steps: `refresh`)."""
        check_name(name, NAME, "name", NAME_RULE)
        if name == LOCAL:
            raise Conflict("compute target 'local' is built in; choose another name", field="name")
        settings = check_settings(kind, {} if settings is None else settings)
        if kind == "batch" and self.provisioner is None:
            raise Invalid("AWS Batch is not configured on this deployment: use an instance target, or run on "
                          "the AWS deployment", field="type")
        key = table_keys.compute_target(workspace, name)
        item = {"pk": key.pk, "sk": key.sk, "entity": "compute_target", "name": name, "type": kind,
                "settings": settings, "state": "Creating" if kind == "batch" else "Succeeded", "resources": {},
                "error": None, "created": self.ctx.now(), "created_by": principal.user,
                "attempt": secrets.token_hex(8)}
        # A name whose earlier create failed may be reused once what it made is gone.
        reusable = any_of(item_absent(), all_of(attr_eq("state", "Failed"), attr_absent("cleanup")))
        operations = [Put(item, reusable), Check(table_keys.workspace(workspace), item_exists())]
        if kind == "batch":  # the sweep's list of targets on their way
            pending = pending_key(workspace, name)
            operations.append(Put({"pk": pending.pk, "sk": pending.sk, "entity": "compute_pending",
                                   "workspace": workspace, "name": name, "created": item["created"]}))
        operations.append(Audit(self.ctx).entry(principal, workspace, "compute.created", name, {"type": kind}))
        try:
            self.ctx.table.transact(operations)
        except ConditionFailed as failure:
            if failure.index == 1:
                raise NotFound(f"workspace {workspace!r} not found") from None
            current = self.ctx.table.get_item(key) or {}
            if current.get("state") == "Failed":
                raise Conflict(f"compute target {name!r} failed and what it made is still being deleted; "
                               "create it again in a few minutes", field="name") from None
            raise Conflict(f"compute target {name!r} already exists in workspace {workspace!r}",
                           field="name") from None
        if kind == "batch":
            item = self.lifecycle.start(workspace, item)
        return target_view(item)

    # --- read -----------------------------------------------------------------------------------
    def find(self, workspace: str, name: str) -> dict | None:
        """The stored target (None for `local`, or when there is none)."""
        if name == LOCAL or not isinstance(name, str) or not NAME.fullmatch(name):
            return None
        return self.ctx.table.get_item(table_keys.compute_target(workspace, name))

    def record(self, workspace: str, name: str) -> dict:
        """The stored target (for `local`, its built-in view); NotFound when there is none."""
        if name == LOCAL:
            return dict(_LOCAL_VIEW)
        item = self.find(workspace, name)
        if item is None:
            raise NotFound(f"compute target {name!r} not found in workspace {workspace!r}")
        return item

    def get(self, workspace: str, name: str) -> dict:
        """The target's view with `active_runs`, its count of runs that have not ended; a creation under way
        is taken a step further first."""
        if name == LOCAL:
            view = dict(_LOCAL_VIEW)
        else:
            item = self.refresh(workspace, self.record(workspace, name))
            if item["state"] == "Deleted":  # this look finished its deletion
                raise NotFound(f"compute target {name!r} not found in workspace {workspace!r}")
            view = target_view(item)
        return {**view, "active_runs": self._active_count(workspace, name)}

    def list(self, workspace: str) -> list[dict]:
        stored = self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.COMPUTE_PREFIX))
        return [dict(_LOCAL_VIEW), *(target_view(i) for i in stored)]

    def usable(self, workspace: str, name: str) -> dict | None:
        """For a submission: the target's item (None for `local`); Invalid naming `run_config.compute` otherwise."""
        if name == LOCAL:
            return None
        item = self.find(workspace, name)
        if item is None:
            raise Invalid(f"compute target {name!r} not found in workspace {workspace!r}", field="run_config.compute")
        item = self.refresh(workspace, item)
        if item["state"] != "Succeeded":
            raise Invalid(f"compute target {name!r} is {item['state']}; runs need a target in state Succeeded",
                          field="run_config.compute")
        return item

    def _active_count(self, workspace: str, name: str) -> int:
        return sum(1 for _ in self.ctx.table.query_all(Query(table_keys.active_runs_pk(workspace, name))))

    # --- delete ---------------------------------------------------------------------------------
    def delete(self, workspace: str, name: str, stop_runs: Callable[[list[str]], None] | None = None,
               by: Principal | None = None) -> bool:
        """Deletes the target and what Nimbus made for it; False while Batch is still taking that down (the
        target stays `Deleting`, and `refresh`/`sweep` go on). Active runs refuse it (409), unless `stop_runs`
        is given: it is called with their ids, once no new run can reach the target, and must end them."""
        if name == LOCAL:
            raise Invalid("compute target 'local' is built in and cannot be deleted", field="name")
        item = self.record(workspace, name)
        state, key = item["state"], table_keys.compute_target(workspace, name)
        resources = item.get("resources") or {}
        if state == "Creating" and not resources.get("created") and \
                self.ctx.clock() - parse_iso(item["created"]) < START_GRACE_S:
            raise Conflict(f"compute target {name!r} is being started; delete it in a minute")
        # Deleting first: a submission reads the state, and the ACTIVE check below then sees every run
        # that was written before the change.
        try:
            self.ctx.table.update(Update(key, set={"state": "Deleting"}, remove=["claim"],
                                         condition=same_attempt(item, state)))
        except ConditionFailed:
            raise Conflict(f"compute target {name!r} changed meanwhile; retry") from None
        if stop_runs is not None:
            stop_runs([i["sk"] for i in self.ctx.table.query_all(Query(table_keys.active_runs_pk(workspace, name)))])
        active = self.ctx.table.query(Query(table_keys.active_runs_pk(workspace, name), limit=ACTIVE_RUNS_NAMED)).items
        if active:
            self._restore(key, state)
            ids = ", ".join(i["sk"] for i in active)
            raise Conflict(f"compute target {name!r} still has active runs ({ids}); cancel them or wait for them "
                           "to end", details={"active_runs": [i["sk"] for i in active]})
        if state == "Creating" and not resources.get("created"):  # its start never got recorded
            resources = (self.provisioner.find_started(workspace, name) if self.provisioner else None) or {}
        if item["type"] == "batch" and resources.get("created"):
            if self.provisioner is None:
                self._restore(key, state)
                raise Invalid("AWS Batch is not configured on this deployment: the target's queue and compute "
                              "environment cannot be deleted from here", field="name")
            if not self.lifecycle.tear_down(workspace, name, resources):
                self._audit_deleted(by, workspace, item)
                return False
        self._remove(workspace, name, item["type"])
        self._audit_deleted(by, workspace, item)
        return True

    def _audit_deleted(self, by: Principal | None, workspace: str, item: dict) -> None:
        """Written once the deletion is committed (gone, or Deleting for good): the deletion takes several
        writes and calls to Batch, and any of the earlier ones may still give it up (active runs)."""
        Audit(self.ctx).record(by, workspace, "compute.deleted", item["name"], {"type": item["type"]})

    def _remove(self, workspace: str, name: str, kind: str) -> None:
        self.lifecycle.remove(workspace, name)
        if kind == "instance":
            self.ctx.table.batch_delete(slot_keys(self.ctx, workspace, name))

    def delete_all(self, workspace: str, stop_runs: Callable[[list[str]], None], by: Principal | None = None) -> int:
        """Every stored target of the workspace, with what Nimbus made for it; their active runs are ended
        by `stop_runs` first (a forced workspace delete). Returns how many were deleted (a cluster Batch is
        still taking down is finished by the sweep, from its pending entry)."""
        stored = list(self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.COMPUTE_PREFIX)))
        for item in stored:
            if item["state"] != "Deleting":
                self.delete(workspace, item["name"], stop_runs, by)
        return len(stored)

    def _restore(self, key, state: str) -> None:
        try:
            self.ctx.table.update(Update(key, set={"state": state}, condition=attr_eq("state", "Deleting")))
        except ConditionFailed:  # changed by someone else: theirs stands
            log.warning("compute target %s left its Deleting state meanwhile", key.sk)


def target_view(item: dict) -> dict:
    view = {k: item.get(k) for k in ("name", "type", "settings", "state", "created", "created_by")}
    if item.get("resources"):
        view["resources"] = item["resources"]
    if item.get("error"):
        view["error"] = item["error"]
    if item.get("state") == "Creating" and item.get("step"):
        view["step"] = item["step"]
    if item.get("cleanup"):
        view["cleanup"] = True
    return view
