"""The Dispatcher of `instance` targets: a queue per target that agents (`nimbus agent`) pull from.

A submitted run waits as `QUEUE#<ws>#<target>` / `<run_id>`, written in the submit transaction. An
agent claims the oldest by deleting its item with a condition that it still exists: of agents racing
for one run, exactly one delete succeeds, and the others move on to the next run.
"""
from __future__ import annotations

from chalicelib.compute.dispatcher import Dispatcher, JobSpec
from chalicelib.services import keys
from chalicelib.services.common import Context
from chalicelib.services.identity import Identity
from chalicelib.store.table import ConditionFailed, Put, Query, item_absent, item_exists

CLAIM_PAGE = 25  # queue items read per Query while looking for one still unclaimed


class InstanceQueue(Dispatcher):
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def queue_entry(self, spec: JobSpec) -> Put:
        key = keys.instance_queue_entry(spec.workspace, spec.compute, spec.run_id)
        return Put({"pk": key.pk, "sk": key.sk, "entity": "instance_queued_job", "workspace": spec.workspace,
                    "target": spec.compute, "max_duration_s": spec.max_duration_s, "created": self.ctx.now()},
                   item_absent())

    def submit(self, spec: JobSpec) -> None:
        """Nothing more: the queue item written with the run is the whole hand-over."""

    def cancel_job(self, spec: JobSpec) -> bool:
        key = keys.instance_queue_entry(spec.workspace, spec.compute, spec.run_id)
        try:
            self.ctx.table.delete(key.pk, key.sk, item_exists())
        except ConditionFailed:
            return False  # already claimed: the agent's runner sees the run canceled and stops
        return True

    def cancel(self, run_id: str) -> bool:
        run = self.ctx.table.get_item(keys.run(run_id))
        if run is None or not run.get("compute_target"):
            return False
        return self.cancel_job(JobSpec(run_id, run["workspace"], None, compute=run["compute_target"]))

    def claim(self, workspace: str, target: str) -> tuple[dict, str] | None:
        """(the oldest queued run, a token for it), or None when nothing is queued."""
        query = Query(keys.instance_queue_pk(workspace, target), limit=CLAIM_PAGE)
        for entry in self.ctx.table.query_all(query):
            try:
                self.ctx.table.delete(entry["pk"], entry["sk"], item_exists())
            except ConditionFailed:
                continue  # another agent got it first
            run = self.ctx.table.get_item(keys.run(entry["sk"]))
            if run is None or run["status"] != "Queued":
                continue  # canceled or failed while queued: nothing to run
            token = Identity(self.ctx).create_run_token(run["id"], workspace, run["submitted_by"])
            return run, token
        return None
