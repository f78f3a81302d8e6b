"""A Batch cluster's life as a compute target, kept on the target's item (compute_targets.py).

A cluster Nimbus makes takes minutes to become usable, longer than one request may last, so its
creation is a state machine kept on the item (`step`, see `refresh`). The create request starts it;
each later step is taken by whoever looks next: a GET of the target, a submission naming it, or the
scheduled sweep (`sweep`, from api/batch_events.py). Every step is a conditional write on the state
read, so two of them at once change the target once; the one step that makes something (the job
queue) is first claimed on the item, so two cannot both make it. A failed creation's resources, and a
deleted target's, are taken down the same way (`cleanup`), step by step.
"""
from __future__ import annotations

import logging
import secrets
from typing import Protocol

from chalicelib.errors import Invalid, NimbusError
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.timestamps import parse_iso
from chalicelib.store.table import (
    Cond, ConditionFailed, Key, Put, Query, Update, all_of, any_of, attr_absent, attr_eq, attr_lt,
)

log = logging.getLogger(__name__)

CREATE_TIMEOUT_S = 30 * 60  # a batch target still Creating after this is Failed, and what was made is deleted
START_GRACE_S = 120  # how long the create request may still be starting the compute environment
STEP_CLAIM_S = 120  # how long one caller holds the queue-creation step before another may take it over
PENDING_PK = "COMPUTEPENDING"  # sk `<ws>#<name>`: a batch target whose creation or cleanup is not finished


class Provisioner(Protocol):
    """AWS Batch behind a port (chalicelib/compute/batch/provisioner.py). `resources` is what the
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


def same_attempt(item: dict, state: str) -> Cond:
    """The item is still in `state` and is the same creation (a name may be reused after a failure)."""
    attempt = attr_eq("attempt", item["attempt"]) if item.get("attempt") else attr_absent("attempt")
    return all_of(attr_eq("state", state), attempt)


class ClusterLifecycle:
    def __init__(self, ctx: Context, provisioner: Provisioner | None):
        self.ctx = ctx
        self.provisioner = provisioner

    def start(self, workspace: str, item: dict) -> dict:
        """Attached → Succeeded; made → the compute environment asked for (step `compute_environment`);
        refused → Failed with the reason (the error is raised on)."""
        key = table_keys.compute_target(workspace, item["name"])
        try:
            resources = self.provisioner.start(workspace, item["name"], item["settings"])
        except Exception as error:
            message = error.message if isinstance(error, NimbusError) else "provisioning failed; see the service log"
            self.ctx.table.update(Update(key, set={"state": "Failed", "error": {"message": message}},
                                         condition=same_attempt(item, "Creating")))
            raise
        if not resources.get("created"):
            return self.ctx.table.update(Update(key, set={"state": "Succeeded", "resources": resources},
                                                condition=same_attempt(item, "Creating")))
        try:
            return self.ctx.table.update(Update(key, set={"resources": resources, "step": "compute_environment"},
                                                condition=same_attempt(item, "Creating")))
        except ConditionFailed:  # failed by a sweep meanwhile: what was made is left for its cleanup
            log.error("compute target %s/%s changed while starting; its compute environment is handed to cleanup",
                      workspace, item["name"])
            self._hand_to_cleanup(key, item, resources)
            return self.ctx.table.get_item(key) or item

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
                return self.finish_delete(workspace, item) or {**item, "state": "Deleted"}
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
        key = table_keys.compute_target(workspace, item["name"])
        found = self.provisioner.find_started(workspace, item["name"])
        if found is None:
            return self._fail(workspace, item, "the creation was interrupted before its compute environment was "
                                               "made; create the target again")
        try:
            return self.ctx.table.update(Update(key, set={"resources": found, "step": "compute_environment"},
                                                condition=all_of(same_attempt(item, "Creating"), attr_absent("step"))))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item

    def _create_queue(self, workspace: str, item: dict) -> dict:
        """The queue, made by the one caller that claims the step; the others read what it recorded."""
        key, now, token = table_keys.compute_target(workspace, item["name"]), self.ctx.clock(), secrets.token_hex(8)
        free = any_of(attr_absent(("claim", "until")), attr_lt(("claim", "until"), now))
        try:
            self.ctx.table.update(Update(key, set={"claim": {"token": token, "until": now + STEP_CLAIM_S}},
                                         condition=all_of(same_attempt(item, "Creating"),
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
                condition=all_of(same_attempt(item, "Creating"), attr_eq(("claim", "token"), token))))
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
        key = table_keys.compute_target(workspace, item["name"])
        try:
            done = self.ctx.table.update(Update(key, set={"state": "Succeeded"}, remove=["step", "claim"],
                                                condition=all_of(same_attempt(item, "Creating"),
                                                                 attr_eq("step", "job_queue"))))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item
        self.settled(workspace, item["name"])
        return done

    def _fail(self, workspace: str, item: dict, message: str) -> dict:
        """Creating → Failed with the reason; what was made is then taken down (`cleanup` until it is gone)."""
        key = table_keys.compute_target(workspace, item["name"])
        changes: dict = {"state": "Failed", "error": {"message": message}}
        if (item.get("resources") or {}).get("created"):
            changes["cleanup"] = True
        try:
            failed = self.ctx.table.update(Update(key, set=changes, remove=["step", "claim"],
                                                  condition=same_attempt(item, "Creating")))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item
        log.info("compute target %s/%s failed: %s", workspace, item["name"], message)
        return self._clean_up(workspace, failed)

    def _clean_up(self, workspace: str, item: dict) -> dict:
        key = table_keys.compute_target(workspace, item["name"])
        if item.get("cleanup") and not self.provisioner.dismantle(item.get("resources") or {}):
            return item  # Batch is still taking it down: the next look goes on
        try:
            done = self.ctx.table.update(Update(key, set={"resources": {}}, remove=["cleanup"],
                                                condition=same_attempt(item, "Failed")))
        except ConditionFailed:
            return self.ctx.table.get_item(key) or item
        self.settled(workspace, item["name"])
        return done

    def _hand_to_cleanup(self, key: Key, item: dict, resources: dict) -> None:
        try:
            self.ctx.table.update(Update(key, set={"resources": resources, "cleanup": True},
                                         condition=same_attempt(item, "Failed")))
        except ConditionFailed:
            log.error("compute target %s: Batch resources %s could not be handed to cleanup; delete them by hand",
                      key.sk, resources)

    def settled(self, workspace: str, name: str) -> None:
        pending = pending_key(workspace, name)
        self.ctx.table.delete(pending.pk, pending.sk)

    def sweep(self) -> dict[str, int]:
        """Takes every unfinished creation and cleanup a step further (the 5-minute schedule calls it)."""
        counts = {"checked": 0, "settled": 0}
        if self.provisioner is None:
            return counts
        for entry in list(self.ctx.table.query_all(Query(PENDING_PK))):
            counts["checked"] += 1
            item = self.ctx.table.get_item(table_keys.compute_target(entry["workspace"], entry["name"]))
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

    def finish_delete(self, workspace: str, item: dict) -> dict | None:
        """A Deleting target's cluster taken down a step further; None once it is gone with its item."""
        if not self.provisioner.dismantle(item.get("resources") or {}):
            return item
        try:
            self.remove(workspace, item["name"])
        except ConditionFailed:
            return self.ctx.table.get_item(table_keys.compute_target(workspace, item["name"]))
        return None

    def tear_down(self, workspace: str, name: str, resources: dict) -> bool:
        """A Deleting target's cluster taken down as far as it goes now; True once nothing is left. Taking
        a cluster down takes minutes: later looks go on, from the item or, once a workspace deleted
        meanwhile took the item, from the pending entry, which carries the resources."""
        key, pending = table_keys.compute_target(workspace, name), pending_key(workspace, name)
        self.ctx.table.transact([
            Update(key, set={"resources": resources, "cleanup": True}, condition=attr_eq("state", "Deleting")),
            Put({"pk": pending.pk, "sk": pending.sk, "entity": "compute_pending", "workspace": workspace,
                 "name": name, "created": self.ctx.now(), "resources": resources})])
        try:
            return self.provisioner.dismantle(resources)
        except NimbusError as error:  # Batch busy or unreachable: the next look goes on
            log.warning("compute target %s/%s not taken down yet: %s", workspace, name, error.message)
            return False

    def remove(self, workspace: str, name: str) -> None:
        """The Deleting target's item and its pending entry."""
        key = table_keys.compute_target(workspace, name)
        self.ctx.table.delete(key.pk, key.sk, attr_eq("state", "Deleting"))
        self.settled(workspace, name)
