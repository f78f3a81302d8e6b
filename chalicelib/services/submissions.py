"""Submitting a script run: a Queued run with its snapshot and configuration, handed to a dispatcher.

A client token makes submission safe to retry: the first submit records it beside the run, in the
same transaction, and a repeat returns that run instead of creating another.
"""
from __future__ import annotations

from chalicelib.compute.dispatcher import Dispatcher, JobSpec
from chalicelib.errors import Invalid
from chalicelib.services import keys
from chalicelib.services.common import Context, new_id
from chalicelib.services.identity import Principal
from chalicelib.services.runs import Runs
from chalicelib.store.table import ConditionFailed, Key, Put, item_absent


def submission_key(workspace: str, client_token: str) -> Key:
    return Key(keys.workspace_pk(workspace), f"SUBMIT#{client_token}")


class Submissions:
    def __init__(self, ctx: Context, dispatcher: Dispatcher | None):
        self.ctx = ctx
        self.dispatcher = dispatcher

    def submit(self, principal: Principal, workspace: str, experiment: str | None, *, snapshot_id: str,
               run_config: dict, git: dict | None = None, ci: dict | None = None, client_token: str | None = None,
               tags: dict | None = None, properties: dict | None = None, display_name: str | None = None,
               parent_id: str | None = None) -> tuple[dict, bool]:
        """(the run, whether it is new). A repeated client token returns the first run."""
        runs = Runs(self.ctx)
        if client_token:
            earlier = self._earlier(workspace, client_token)
            if earlier is not None:
                return earlier, False
        if run_config.get("compute", "local") != "local" or self.dispatcher is None:
            raise Invalid(f"compute target {run_config.get('compute')!r} is not available on this deployment",
                          field="run_config.compute")
        if self.ctx.table.get(keys.workspace_pk(workspace), f"SNAPSHOT#{snapshot_id}") is None:
            raise Invalid(f"snapshot {snapshot_id} not found in workspace {workspace!r}; upload it first",
                          field="snapshot_id")
        run_id, extra = new_id(self.ctx.clock), []
        if client_token:  # recorded in the run's own transaction: a repeat finds it or loses the race
            key = submission_key(workspace, client_token)
            extra.append(Put({"pk": key.pk, "sk": key.sk, "entity": "submission", "run_id": run_id}, item_absent()))
        spec = JobSpec(run_id, workspace, run_config.get("max_run_duration_s"))
        queued = self.dispatcher.queue_entry(spec)
        if queued is not None:
            extra.append(queued)
        submission = {"snapshot_id": snapshot_id, "run_config": run_config, "git": git, "ci": ci}
        try:
            run = runs.create(principal, workspace, experiment, parent_id=parent_id, tags=tags, properties=properties,
                              display_name=display_name, status="Queued", submission=submission,
                              extra_operations=extra, run_id=run_id)
        except ConditionFailed:  # a concurrent submit with the same token won
            return runs.get(workspace, self.ctx.table.get_item(submission_key(workspace, client_token))["run_id"]), False
        self.dispatcher.submit(spec)
        return run, True

    def _earlier(self, workspace: str, client_token: str) -> dict | None:
        record = self.ctx.table.get_item(submission_key(workspace, client_token))
        return Runs(self.ctx).get(workspace, record["run_id"]) if record else None
