"""Compute targets: where submitted runs execute (docs/compute.md, "Compute targets").

`local` is built in: always listed, never stored. A `batch` target's AWS resources are made by a
provisioner (`create(workspace, name, settings) -> resources`, `delete(resources)`), so this module
never talks to AWS; an `instance` target needs nothing made. The item is written `Creating` before
anything is provisioned, so two creates of one name cannot both provision, and `Deleting` before
anything is torn down, so no run can be submitted to a target that is going away.
"""
from __future__ import annotations

import logging
import re
from typing import Protocol

from chalicelib.errors import Conflict, Invalid, NimbusError, NotFound
from chalicelib.services import keys
from chalicelib.services.common import Context, check_name, parse_iso
from chalicelib.services.compute_settings import check_settings
from chalicelib.services.identity import Principal
from chalicelib.store.table import (
    Check, ConditionFailed, Put, Query, Update, any_of, attr_eq, item_absent, item_exists,
)

log = logging.getLogger(__name__)

LOCAL = "local"
NAME = re.compile(r"[a-z][a-z0-9-]{1,31}")
NAME_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter"
ACTIVE_RUNS_NAMED = 5  # a refused delete names at most this many of the target's active runs
STALE_CREATE_S = 30 * 60  # a create this old was interrupted (its process died): the item may be deleted
_LOCAL_VIEW = {"name": LOCAL, "type": "local", "settings": {}, "state": "Succeeded", "created": None,
               "created_by": None}


class Provisioner(Protocol):
    def create(self, workspace: str, name: str, settings: dict) -> dict: ...

    def delete(self, resources: dict) -> None: ...


class ComputeTargets:
    def __init__(self, ctx: Context, provisioner: Provisioner | None = None):
        self.ctx = ctx
        self.provisioner = provisioner

    # --- create ---------------------------------------------------------------------------------
    def create(self, principal: Principal, workspace: str, name: str, kind: str, settings: dict | None) -> dict:
        check_name(name, NAME, "name", NAME_RULE)
        if name == LOCAL:
            raise Conflict("compute target 'local' is built in; choose another name", field="name")
        settings = check_settings(kind, {} if settings is None else settings)
        if kind == "batch" and self.provisioner is None:
            raise Invalid("AWS Batch is not configured on this deployment: use an instance target, or run on "
                          "the AWS deployment", field="type")
        key = keys.compute_target(workspace, name)
        item = {"pk": key.pk, "sk": key.sk, "entity": "compute_target", "name": name, "type": kind,
                "settings": settings, "state": "Creating" if kind == "batch" else "Succeeded", "resources": {},
                "error": None, "created": self.ctx.now(), "created_by": principal.user}
        # A name whose earlier create failed may be reused; any other existing target keeps it.
        reusable = any_of(item_absent(), attr_eq("state", "Failed"))
        try:
            self.ctx.table.transact([Put(item, reusable), Check(keys.workspace(workspace), item_exists())])
        except ConditionFailed as failure:
            if failure.index == 1:
                raise NotFound(f"workspace {workspace!r} not found") from None
            raise Conflict(f"compute target {name!r} already exists in workspace {workspace!r}",
                           field="name") from None
        if kind == "batch":
            item = self._provision(workspace, item)
        return target_view(item)

    def _provision(self, workspace: str, item: dict) -> dict:
        """Creating → Succeeded with the resources, or → Failed with the reason (the error is raised on)."""
        key = keys.compute_target(workspace, item["name"])
        try:
            resources = self.provisioner.create(workspace, item["name"], item["settings"])
        except Exception as error:
            message = error.message if isinstance(error, NimbusError) else "provisioning failed; see the service log"
            self.ctx.table.update(Update(key, set={"state": "Failed", "error": {"message": message}},
                                         condition=attr_eq("state", "Creating")))
            raise
        return self.ctx.table.update(Update(key, set={"state": "Succeeded", "resources": resources},
                                            condition=attr_eq("state", "Creating")))

    # --- read -----------------------------------------------------------------------------------
    def find(self, workspace: str, name: str) -> dict | None:
        """The stored target (None for `local`, or when there is none)."""
        if name == LOCAL or not isinstance(name, str) or not NAME.fullmatch(name):
            return None
        return self.ctx.table.get_item(keys.compute_target(workspace, name))

    def record(self, workspace: str, name: str) -> dict:
        """The stored target (for `local`, its built-in view); NotFound when there is none."""
        if name == LOCAL:
            return dict(_LOCAL_VIEW)
        item = self.find(workspace, name)
        if item is None:
            raise NotFound(f"compute target {name!r} not found in workspace {workspace!r}")
        return item

    def get(self, workspace: str, name: str) -> dict:
        """The target's view with `active_runs`, its count of runs that have not ended."""
        view = dict(_LOCAL_VIEW) if name == LOCAL else target_view(self.record(workspace, name))
        return {**view, "active_runs": self._active_count(workspace, name)}

    def list(self, workspace: str) -> list[dict]:
        stored = self.ctx.table.query_all(Query(keys.workspace_pk(workspace), sk_prefix=keys.COMPUTE_PREFIX))
        return [dict(_LOCAL_VIEW), *(target_view(i) for i in stored)]

    def usable(self, workspace: str, name: str) -> dict | None:
        """For a submission: the target's item (None for `local`); Invalid naming `run_config.compute` otherwise."""
        if name == LOCAL:
            return None
        item = self.find(workspace, name)
        if item is None:
            raise Invalid(f"compute target {name!r} not found in workspace {workspace!r}", field="run_config.compute")
        if item["state"] != "Succeeded":
            raise Invalid(f"compute target {name!r} is {item['state']}; runs need a target in state Succeeded",
                          field="run_config.compute")
        return item

    def _active_count(self, workspace: str, name: str) -> int:
        return sum(1 for _ in self.ctx.table.query_all(Query(keys.active_runs_pk(workspace, name))))

    # --- delete ---------------------------------------------------------------------------------
    def delete(self, workspace: str, name: str) -> None:
        if name == LOCAL:
            raise Invalid("compute target 'local' is built in and cannot be deleted", field="name")
        item = self.record(workspace, name)
        state, key = item["state"], keys.compute_target(workspace, name)
        if state == "Creating" and self.ctx.clock() - parse_iso(item["created"]) < STALE_CREATE_S:
            raise Conflict(f"compute target {name!r} is still being created; delete it once it is Succeeded or Failed")
        # Deleting first: a submission reads the state, and the ACTIVE check below then sees every run
        # that was written before the change.
        try:
            self.ctx.table.update(Update(key, set={"state": "Deleting"}, condition=attr_eq("state", state)))
        except ConditionFailed:
            raise Conflict(f"compute target {name!r} changed meanwhile; retry") from None
        active = self.ctx.table.query(Query(keys.active_runs_pk(workspace, name), limit=ACTIVE_RUNS_NAMED)).items
        if active:
            self._restore(key, state)
            ids = ", ".join(i["sk"] for i in active)
            raise Conflict(f"compute target {name!r} still has active runs ({ids}); cancel them or wait for them "
                           "to end", details={"active_runs": [i["sk"] for i in active]})
        resources = item.get("resources") or {}
        if item["type"] == "batch" and resources.get("created"):
            if self.provisioner is None:
                self._restore(key, state)
                raise Invalid("AWS Batch is not configured on this deployment: the target's queue and compute "
                              "environment cannot be deleted from here", field="name")
            try:
                self.provisioner.delete(resources)
            except Exception:
                self._restore(key, state)
                raise
        self.ctx.table.delete(key.pk, key.sk, attr_eq("state", "Deleting"))

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
    return view
