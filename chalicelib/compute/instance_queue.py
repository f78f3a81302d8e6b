"""The Dispatcher of `instance` targets: a queue per target that agents (`nimbus agent`) pull from.

A submitted run waits as `QUEUE#<ws>#<target>` / `<run_id>`, written in the submit transaction. An
agent claims the oldest run by leasing its item: a conditional update sets `lease` = {"token", "until"}
(`until` = now + LEASE_SECONDS, epoch seconds) when the item has no lease or its lease has lapsed. Of
agents racing for one run exactly one update succeeds; the others move on to the next run. The item stays
until the run leaves Queued: the runner's first report deletes it in the same transaction as the status
change (chalicelib/services/runs.py), and a claim deletes any item whose run is found no longer Queued.
So an agent that dies (or loses the answer) between claiming and starting its runner delays the run by
at most LEASE_SECONDS: the next claim after that hands the same run out again, with a fresh run token.

`lease.token` is the digest of the run token handed out with the lease. Re-leasing a lapsed lease
deletes that earlier token in the same transaction, so a late runner of the first claim is refused
(401) from then on instead of running the run a second time.
"""
from __future__ import annotations

from chalicelib.compute.dispatcher import Dispatcher, JobSpec
from chalicelib.services import keys
from chalicelib.services.common import Context
from chalicelib.services.identity import Identity, digest
from chalicelib.store.table import (
    ConditionFailed, Delete, Key, Put, Query, Update, all_of, any_of, attr_absent, attr_eq, attr_lt, item_absent,
    item_exists,
)

CLAIM_PAGE = 25  # queue items read per Query while looking for one not leased
LEASE_SECONDS = 120  # how long a claimed run stays with its agent before another claim may take it


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
            return False  # already started: the agent's runner sees the run canceled and stops
        return True

    def cancel(self, run_id: str) -> bool:
        run = self.ctx.table.get_item(keys.run(run_id))
        if run is None or not run.get("compute_target"):
            return False
        return self.cancel_job(JobSpec(run_id, run["workspace"], None, compute=run["compute_target"]))

    def claim(self, workspace: str, target: str) -> tuple[dict, str] | None:
        """(the oldest queued run not leased to another agent, a token for it), or None when there is none."""
        query = Query(keys.instance_queue_pk(workspace, target), limit=CLAIM_PAGE)
        for entry in self.ctx.table.query_all(query):
            now = self.ctx.clock()
            lease = entry.get("lease")
            if isinstance(lease, dict) and isinstance(lease.get("until"), (int, float)) and lease["until"] > now:
                continue  # with another agent until its lease lapses
            run = self.ctx.table.get_item(keys.run(entry["sk"]))
            if run is None or run["status"] != "Queued":
                self._drop(entry)  # canceled, failed or started meanwhile: nothing to run
                continue
            claimed = self._lease(entry, run, now)
            if claimed is not None:
                return run, claimed
        return None

    def _lease(self, entry: dict, run: dict, now: float) -> str | None:
        """Leases the entry to this claim and returns a fresh run token; None when another claim won."""
        token = Identity(self.ctx).create_run_token(run["id"], run["workspace"], run["submitted_by"])
        previous = entry.get("lease") if isinstance(entry.get("lease"), dict) else None
        free = any_of(attr_absent(("lease", "until")), attr_lt(("lease", "until"), now))
        if previous is not None and previous.get("token"):
            free = all_of(free, attr_eq(("lease", "token"), previous["token"]))  # the lease this claim saw
        update = Update(Key(entry["pk"], entry["sk"]),
                        set={"lease": {"token": digest(token), "until": now + LEASE_SECONDS}},
                        condition=all_of(item_exists(), free))
        try:
            if previous is not None and previous.get("token"):
                # The lapsed claim's token stops working: its runner, if it ever starts, is refused
                self.ctx.table.transact([update, Delete(keys.token(previous["token"]))])
            else:
                self.ctx.table.update(update)
        except ConditionFailed:
            self._revoke(token)  # another agent leased it first, or the run left the queue
            return None
        return token

    def _drop(self, entry: dict) -> None:
        try:
            self.ctx.table.delete(entry["pk"], entry["sk"], item_exists())
        except ConditionFailed:
            pass  # another claim (or the run's own report) removed it first

    def _revoke(self, token: str) -> None:
        key = keys.token(digest(token))
        self.ctx.table.delete(key.pk, key.sk)
