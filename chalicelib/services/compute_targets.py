"""Compute targets: where submitted runs execute (docs/compute.md, "Compute targets").

`local` is built in: always listed, never stored. A `batch` target's AWS resources are made by a
provisioner (the `Provisioner` port below), so this module never talks to AWS; an `instance` target needs
nothing made. The item is written `Creating` before anything is provisioned, so two creates of one name
cannot both provision, and `Deleting` before anything is torn down, so no run can be submitted to a
target that is going away.

A cluster Nimbus makes takes minutes to become usable, longer than one request may last, so its
creation is a state machine kept on the item (`step`, see `refresh`). The create request starts it;
each later step is taken by whoever looks next: a GET of the target, a submission naming it, or the
scheduled sweep (`sweep`, from api/batch_events.py). Every step is a conditional write on the state
read, so two of them at once change the target once; the one step that makes something (the job
queue) is first claimed on the item, so two cannot both make it.
"""
from __future__ import annotations

import logging
import re
import secrets
from typing import Callable, Protocol

from chalicelib.errors import Conflict, Invalid, NimbusError, NotFound
from chalicelib.services import keys
from chalicelib.services.common import Context, check_name, parse_iso
from chalicelib.services.compute_settings import check_settings
from chalicelib.services.identity import Principal
from chalicelib.store.table import (
    Check, Cond, ConditionFailed, Key, Put, Query, Update, all_of, any_of, attr_absent, attr_eq, attr_lt, item_absent,
    item_exists,
)

log = logging.getLogger(__name__)

LOCAL = "local"
NAME = re.compile(r"[a-z][a-z0-9-]{1,31}")
NAME_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter"
ACTIVE_RUNS_NAMED = 5  # a refused delete names at most this many of the target's active runs
CREATE_TIMEOUT_S = 30 * 60  # a batch target still Creating after this is Failed, and what was made is deleted
START_GRACE_S = 120  # how long the create request may still be starting the compute environment
STEP_CLAIM_S = 120  # how long one caller holds the queue-creation step before another may take it over
PENDING_PK = "COMPUTEPENDING"  # sk `<ws>#<name>`: a batch target whose creation or cleanup is not finished
_LOCAL_VIEW = {"name": LOCAL, "type": "local", "settings": {}, "state": "Succeeded", "created": None,
               "created_by": None}


class Provisioner(Protocol):
    """AWS Batch behind a port (chalicelib/compute/batch.py's BatchProvisioner). `resources` is what the
    target records: `created` (Nimbus made them), `compute_environment_arn`, `job_queue_arn`, `name`."""

    def start(self, workspace: str, name: str, settings: dict) -> dict:
        """Attach (validated, complete, `created` False) or ask for the compute environment (`created` True)."""

    def find_started(self, workspace: str, name: str) -> dict | None:
        """The resources of a compute environment a start made but did not record; None when none exists."""

    def status(self, resources: dict) -> tuple[str, str | None]:
        """("waiting" | "ready" | "failed", reason) of the queue once there is one, else the compute environment."""

    def create_queue(self, workspace: str, name: str, resources: dict) -> str:
        """The job queue's ARN (an existing queue of the target's name is taken, not made twice)."""

    def dismantle(self, resources: dict) -> bool:
        """Takes down what was made as far as it goes without waiting; True once nothing is left."""


def pending_key(workspace: str, name: str) -> Key:
    return Key(PENDING_PK, f"{workspace}#{name}")


class ComputeTargets:
    def __init__(self, ctx: Context, provisioner: Provisioner | None = None):
        self.ctx = ctx
        self.provisioner = provisioner

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
        key = keys.compute_target(workspace, name)
        item = {"pk": key.pk, "sk": key.sk, "entity": "compute_target", "name": name, "type": kind,
                "settings": settings, "state": "Creating" if kind == "batch" else "Succeeded", "resources": {},
                "error": None, "created": self.ctx.now(), "created_by": principal.user,
                "attempt": secrets.token_hex(8)}
        # A name whose earlier create failed may be reused once what it made is gone.
        reusable = any_of(item_absent(), all_of(attr_eq("state", "Failed"), attr_absent("cleanup")))
        operations = [Put(item, reusable), Check(keys.workspace(workspace), item_exists())]
        if kind == "batch":  # the sweep's list of targets on their way
            pending = pending_key(workspace, name)
            operations.append(Put({"pk": pending.pk, "sk": pending.sk, "entity": "compute_pending",
                                   "workspace": workspace, "name": name, "created": item["created"]}))
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
            item = self._start(workspace, item)
        return target_view(item)

    def _start(self, workspace: str, item: dict) -> dict:
        """Attached → Succeeded; made → the compute environment asked for (step `compute_environment`);
        refused → Failed with the reason (the error is raised on)."""
        key = keys.compute_target(workspace, item["name"])
        try:
            resources = self.provisioner.start(workspace, item["name"], item["settings"])
        except Exception as error:
            message = error.message if isinstance(error, NimbusError) else "provisioning failed; see the service log"
            self.ctx.table.update(Update(key, set={"state": "Failed", "error": {"message": message}},
                                         condition=_same_attempt(item, "Creating")))
            raise
        if not resources.get("created"):
            return self.ctx.table.update(Update(key, set={"state": "Succeeded", "resources": resources},
                                                condition=_same_attempt(item, "Creating")))
        try:
            return self.ctx.table.update(Update(key, set={"resources": resources, "step": "compute_environment"},
                                                condition=_same_attempt(item, "Creating")))
        except ConditionFailed:  # failed by a sweep meanwhile: what was made is left for its cleanup
            log.error("compute target %s/%s changed while starting; its compute environment is handed to cleanup",
                      workspace, item["name"])
            self._hand_to_cleanup(key, item, resources)
            return self.ctx.table.get_item(key) or item

    # --- advancing ------------------------------------------------------------------------------
    def refresh(self, workspace: str, item: dict) -> dict:
        """The item with its creation (or a failed creation's cleanup) taken as far as it goes now."""
        if item.get("type") != "batch" or self.provisioner is None:
            return item
        try:
            if item.get("state") == "Creating":
                return self._advance(workspace, item)
            if item.get("state") == "Failed" and item.get("cleanup"):
                return self._clean_up(workspace, item)
            if item.get("state") == "Deleting" and item.get("cleanup"):
                return self._finish_delete(workspace, item) or {**item, "state": "Deleted"}
        except NimbusError as error:  # Batch busy or unreachable: the next look takes the step
            log.warning("compute target %s/%s not advanced: %s", workspace, item["name"], error.message)
        return item

    def _advance(self, workspace: str, item: dict) -> dict:
        resources, age = item.get("resources") or {}, self.ctx.clock() - parse_iso(item["created"])
        if not resources.get("created"):
            if age < START_GRACE_S:
                return item  # its create request is still starting it
            item = self._adopt(workspace, item)
            if item.get("state") != "Creating":
                return item
        if age > CREATE_TIMEOUT_S:
            return self._fail(workspace, item, f"the cluster was not ready after {CREATE_TIMEOUT_S // 60} minutes")
        for _ in range(3):  # compute environment ready → queue made → queue ready, as far as each goes now
            phase, reason = self.provisioner.status(item["resources"])
            if phase == "waiting":
                return item
            if phase == "failed":
                return self._fail(workspace, item, reason or "AWS Batch gave no reason")
            if item.get("step") == "job_queue":
                return self._succeed(workspace, item)
            made = self._create_queue(workspace, item)
            if made.get("step") != "job_queue" or made.get("state") != "Creating":
                return made
            item = made
        return item

    def _adopt(self, workspace: str, item: dict) -> dict:
        """A create request that died between asking for the compute environment and recording it."""
        key = keys.compute_target(workspace, item["name"])
        found = self.provisioner.find_started(workspace, item["name"])
        if found is None:
            return self._fail(workspace, item, "the creation was interrupted before its compute environment was "
                                               "made; create the target again")
        try:
            return self.ctx.table.update(Update(key, set={"resources": found, "step": "compute_environment"},
                                                condition=all_of(_same_attempt(item, "Creating"), attr_absent("step"))))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item

    def _create_queue(self, workspace: str, item: dict) -> dict:
        """The queue, made by the one caller that claims the step; the others read what it recorded."""
        key, now, token = keys.compute_target(workspace, item["name"]), self.ctx.clock(), secrets.token_hex(8)
        free = any_of(attr_absent(("claim", "until")), attr_lt(("claim", "until"), now))
        try:
            self.ctx.table.update(Update(key, set={"claim": {"token": token, "until": now + STEP_CLAIM_S}},
                                         condition=all_of(_same_attempt(item, "Creating"),
                                                          attr_eq("step", "compute_environment"), free)))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item  # another caller is making it, or it changed
        try:
            arn = self.provisioner.create_queue(workspace, item["name"], item["resources"])
        except Invalid as refused:
            return self._fail(workspace, item, refused.message)
        except NimbusError:
            self._release(key, token)
            raise
        try:
            return self.ctx.table.update(Update(
                key, set={("resources", "job_queue_arn"): arn, "step": "job_queue"}, remove=["claim"],
                condition=all_of(_same_attempt(item, "Creating"), attr_eq(("claim", "token"), token))))
        except ConditionFailed:  # failed or being deleted meanwhile: the queue goes with the rest
            current = self.ctx.table.get_item(key)
            if current is not None and current.get("cleanup"):
                self._hand_to_cleanup(key, current, {**current["resources"], "job_queue_arn": arn})
            return self.ctx.table.get_item(key) or item

    def _release(self, key: Key, token: str) -> None:
        try:
            self.ctx.table.update(Update(key, remove=["claim"], condition=attr_eq(("claim", "token"), token)))
        except ConditionFailed:
            pass  # taken over or changed meanwhile

    def _succeed(self, workspace: str, item: dict) -> dict:
        key = keys.compute_target(workspace, item["name"])
        try:
            done = self.ctx.table.update(Update(key, set={"state": "Succeeded"}, remove=["step", "claim"],
                                                condition=all_of(_same_attempt(item, "Creating"),
                                                                 attr_eq("step", "job_queue"))))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item
        self._settled(workspace, item["name"])
        return done

    def _fail(self, workspace: str, item: dict, message: str) -> dict:
        """Creating → Failed with the reason; what was made is then taken down (`cleanup` until it is gone)."""
        key = keys.compute_target(workspace, item["name"])
        changes: dict = {"state": "Failed", "error": {"message": message}}
        if (item.get("resources") or {}).get("created"):
            changes["cleanup"] = True
        try:
            failed = self.ctx.table.update(Update(key, set=changes, remove=["step", "claim"],
                                                  condition=_same_attempt(item, "Creating")))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item
        log.info("compute target %s/%s failed: %s", workspace, item["name"], message)
        return self._clean_up(workspace, failed)

    def _clean_up(self, workspace: str, item: dict) -> dict:
        key = keys.compute_target(workspace, item["name"])
        if item.get("cleanup") and not self.provisioner.dismantle(item.get("resources") or {}):
            return item  # Batch is still taking it down: the next look goes on
        try:
            done = self.ctx.table.update(Update(key, set={"resources": {}}, remove=["cleanup"],
                                                condition=_same_attempt(item, "Failed")))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item
        self._settled(workspace, item["name"])
        return done

    def _hand_to_cleanup(self, key: Key, item: dict, resources: dict) -> None:
        try:
            self.ctx.table.update(Update(key, set={"resources": resources, "cleanup": True},
                                         condition=_same_attempt(item, "Failed")))
        except ConditionFailed:
            log.error("compute target %s: Batch resources %s could not be handed to cleanup; delete them by hand",
                      key.sk, resources)

    def _settled(self, workspace: str, name: str) -> None:
        pending = pending_key(workspace, name)
        self.ctx.table.delete(pending.pk, pending.sk)

    def sweep(self) -> dict[str, int]:
        """Takes every unfinished creation and cleanup a step further (the 5-minute schedule calls it)."""
        counts = {"checked": 0, "settled": 0}
        if self.provisioner is None:
            return counts
        for entry in list(self.ctx.table.query_all(Query(PENDING_PK))):
            counts["checked"] += 1
            item = self.find(entry["workspace"], entry["name"])
            if item is None and entry.get("resources"):  # deleted with its workspace: the entry is all that is left
                try:
                    if not self.provisioner.dismantle(entry["resources"]):
                        continue
                except NimbusError as error:
                    log.warning("compute target %s not taken down yet: %s", entry["sk"], error.message)
                    continue
            elif item is not None:
                item = self.refresh(entry["workspace"], item)
            if item is None or item["state"] == "Deleted" or not (item["state"] == "Creating" or item.get("cleanup")):
                self.ctx.table.delete(entry["pk"], entry["sk"])
                counts["settled"] += 1
        return counts

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
        stored = self.ctx.table.query_all(Query(keys.workspace_pk(workspace), sk_prefix=keys.COMPUTE_PREFIX))
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
        return sum(1 for _ in self.ctx.table.query_all(Query(keys.active_runs_pk(workspace, name))))

    # --- delete ---------------------------------------------------------------------------------
    def delete(self, workspace: str, name: str, stop_runs: Callable[[list[str]], None] | None = None) -> bool:
        """Deletes the target and what Nimbus made for it; False while Batch is still taking that down (the
        target stays `Deleting`, and `refresh`/`sweep` go on). Active runs refuse it (409), unless `stop_runs`
        is given: it is called with their ids, once no new run can reach the target, and must end them."""
        if name == LOCAL:
            raise Invalid("compute target 'local' is built in and cannot be deleted", field="name")
        item = self.record(workspace, name)
        state, key = item["state"], keys.compute_target(workspace, name)
        resources = item.get("resources") or {}
        if state == "Creating" and not resources.get("created") and \
                self.ctx.clock() - parse_iso(item["created"]) < START_GRACE_S:
            raise Conflict(f"compute target {name!r} is being started; delete it in a minute")
        # Deleting first: a submission reads the state, and the ACTIVE check below then sees every run
        # that was written before the change.
        try:
            self.ctx.table.update(Update(key, set={"state": "Deleting"}, remove=["claim"],
                                         condition=_same_attempt(item, state)))
        except ConditionFailed:
            raise Conflict(f"compute target {name!r} changed meanwhile; retry") from None
        if stop_runs is not None:
            stop_runs([i["sk"] for i in self.ctx.table.query_all(Query(keys.active_runs_pk(workspace, name)))])
        active = self.ctx.table.query(Query(keys.active_runs_pk(workspace, name), limit=ACTIVE_RUNS_NAMED)).items
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
            # Taking a cluster down takes minutes: as far as it goes now, and the rest by later looks. The
            # pending entry carries the resources, so a workspace deleted meanwhile does not lose them.
            pending = pending_key(workspace, name)
            self.ctx.table.transact([
                Update(key, set={"resources": resources, "cleanup": True}, condition=attr_eq("state", "Deleting")),
                Put({"pk": pending.pk, "sk": pending.sk, "entity": "compute_pending", "workspace": workspace,
                     "name": name, "created": self.ctx.now(), "resources": resources})])
            try:
                if not self.provisioner.dismantle(resources):
                    return False
            except NimbusError as error:  # Batch busy or unreachable: the next look goes on
                log.warning("compute target %s/%s not taken down yet: %s", workspace, name, error.message)
                return False
        self._remove(workspace, name, item["type"])
        return True

    def _remove(self, workspace: str, name: str, kind: str) -> None:
        key = keys.compute_target(workspace, name)
        self.ctx.table.delete(key.pk, key.sk, attr_eq("state", "Deleting"))
        self._settled(workspace, name)
        if kind == "instance":
            from chalicelib.compute.instance_queue import slot_keys

            self.ctx.table.batch_delete(slot_keys(self.ctx, workspace, name))

    def _finish_delete(self, workspace: str, item: dict) -> dict | None:
        """A Deleting target's cluster taken down a step further; None once it is gone with its item."""
        if not self.provisioner.dismantle(item.get("resources") or {}):
            return item
        try:
            self._remove(workspace, item["name"], item["type"])
        except ConditionFailed:
            return self.ctx.table.get_item(keys.compute_target(workspace, item["name"]))
        return None

    def delete_all(self, workspace: str, stop_runs: Callable[[list[str]], None]) -> int:
        """Every stored target of the workspace, with what Nimbus made for it; their active runs are ended
        by `stop_runs` first (a forced workspace delete). Returns how many were deleted (a cluster Batch is
        still taking down is finished by the sweep, from its pending entry)."""
        stored = list(self.ctx.table.query_all(Query(keys.workspace_pk(workspace), sk_prefix=keys.COMPUTE_PREFIX)))
        for item in stored:
            if item["state"] != "Deleting":
                self.delete(workspace, item["name"], stop_runs)
        return len(stored)

    def _restore(self, key, state: str) -> None:
        try:
            self.ctx.table.update(Update(key, set={"state": state}, condition=attr_eq("state", "Deleting")))
        except ConditionFailed:  # changed by someone else: theirs stands
            log.warning("compute target %s left its Deleting state meanwhile", key.sk)


def _same_attempt(item: dict, state: str) -> Cond:
    """The item is still in `state` and is the same creation (a name may be reused after a failure)."""
    attempt = attr_eq("attempt", item["attempt"]) if item.get("attempt") else attr_absent("attempt")
    return all_of(attr_eq("state", state), attempt)


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
