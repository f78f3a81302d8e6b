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

The target's `max_concurrent_runs` is kept with slots: `SLOTS#<ws>#<target>` / `<index:04d>` for index
below the limit, each naming the run that holds it (`holder`). A claim leases a run only in the same
transaction that gives it a slot: a slot never written (`item_absent`), or one whose holder has ended
(a Check that its `ACTIVE#` item is gone: the transaction that ends a run deletes it, so ending a run
frees its slot with no write of its own) or whose holder's lease lapsed while it was still queued (a
Check on that lease, and the holder's token is deleted: a late runner of it is refused). Taking a slot
is conditional on the holder read, so two claims cannot both take one; a run re-leased keeps its slot.
"""
from __future__ import annotations

from typing import Callable

from chalicelib.compute.dispatcher import Dispatcher
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.store.table import (
    Check, ConditionFailed, Delete, Key, Operation, Put, Query, Update, all_of, any_of, attr_absent, attr_eq, attr_lt,
    item_absent, item_exists,
)
from nimbus.runtime.job_spec import JobSpec

CLAIM_PAGE = 25  # queue items read per Query while looking for one not leased
LEASE_SECONDS = 120  # how long a claimed run stays with its agent before another claim may take it
SLOT_ATTEMPTS = 5  # a claim that loses a slot to another claim this often answers "none" (the agent polls)


def slots_pk(workspace: str, target: str) -> str:
    """An instance target's run slots: at most `max_concurrent_runs` of its runs are leased or running."""
    return f"SLOTS#{workspace}#{target}"


def slot_key(workspace: str, target: str, index: int) -> Key:
    return Key(slots_pk(workspace, target), f"{index:04d}")


def slot_keys(ctx: Context, workspace: str, target: str) -> list[Key]:
    """The slot items stored for a target (deleted with it)."""
    return [Key(i["pk"], i["sk"]) for i in ctx.table.query_all(Query(slots_pk(workspace, target)))]


class InstanceQueue(Dispatcher):
    """`mint_run_token(run_id, workspace, user)` gives each lease its run token (handed in by the services)."""

    def __init__(self, ctx: Context, mint_run_token: Callable[[str, str, str], str]):
        self.ctx = ctx
        self.mint_run_token = mint_run_token

    def queue_entry(self, spec: JobSpec) -> Put:
        key = table_keys.instance_queue_entry(spec.workspace, spec.compute, spec.run_id)
        return Put({"pk": key.pk, "sk": key.sk, "entity": "instance_queued_job", "workspace": spec.workspace,
                    "target": spec.compute, "max_duration_s": spec.max_duration_s, "created": self.ctx.now()},
                   item_absent())

    def submit(self, spec: JobSpec) -> None:
        """Nothing more: the queue item written with the run is the whole hand-over."""

    def cancel_job(self, spec: JobSpec) -> bool:
        key = table_keys.instance_queue_entry(spec.workspace, spec.compute, spec.run_id)
        try:
            self.ctx.table.delete(key.pk, key.sk, item_exists())
        except ConditionFailed:
            return False  # already started: the agent's runner sees the run canceled and stops
        return True

    def cancel(self, run_id: str) -> bool:
        run = self.ctx.table.get_item(table_keys.run(run_id))
        if run is None or not run.get("compute_target"):
            return False
        return self.cancel_job(JobSpec(run_id, run["workspace"], None, compute=run["compute_target"]))

    def claim(self, workspace: str, target: str, limit: int | None = None) -> tuple[dict, str] | None:
        """(the oldest queued run not leased to another agent, a token for it), or None when there is none,
        or when `limit` runs of the target (its max_concurrent_runs) are leased or running already."""
        slots = _Slots(self.ctx, workspace, target, limit)
        query = Query(table_keys.instance_queue_pk(workspace, target), limit=CLAIM_PAGE)
        for entry in self.ctx.table.query_all(query):
            now = self.ctx.clock()
            if _leased(entry, now):
                continue  # with another agent until its lease lapses
            run = self.ctx.table.get_item(table_keys.run(entry["sk"]))
            if run is None or run["status"] != "Queued":
                self._drop(entry)  # canceled, failed or started meanwhile: nothing to run
                continue
            for _ in range(SLOT_ATTEMPTS):
                slot = slots.for_run(run["id"], now)
                if slot is None:
                    return None  # every slot is held: nothing more may start now
                outcome = self._lease(entry, run, now, slot)
                if outcome == "slot":
                    slots.reread()  # another claim took the slot first: look again
                    continue
                if outcome is not None:
                    return run, outcome
                break  # another agent leased this run first, or it left the queue: try the next
        return None

    def _lease(self, entry: dict, run: dict, now: float, slot: list[Operation]) -> str | None:
        """Leases the entry (and the slot) to this claim and returns a fresh run token; None when another
        claim won the entry, "slot" when it won the slot."""
        token = self.mint_run_token(run["id"], run["workspace"], run["submitted_by"])
        previous = entry.get("lease") if isinstance(entry.get("lease"), dict) else None
        free = any_of(attr_absent(("lease", "until")), attr_lt(("lease", "until"), now))
        if previous is not None and previous.get("token"):
            free = all_of(free, attr_eq(("lease", "token"), previous["token"]))  # the lease this claim saw
        operations: list[Operation] = [Update(Key(entry["pk"], entry["sk"]),
                                              set={"lease": {"token": table_keys.token_digest(token), "until": now + LEASE_SECONDS}},
                                              condition=all_of(item_exists(), free))]
        if previous is not None and previous.get("token"):
            # The lapsed claim's token stops working: its runner, if it ever starts, is refused
            operations.append(Delete(table_keys.token(previous["token"])))
        operations.extend(slot)
        try:
            if len(operations) == 1:
                self.ctx.table.update(operations[0])
            else:
                self.ctx.table.transact(operations)
        except ConditionFailed as failure:
            self._revoke(token)  # another agent leased it first, or the run left the queue
            return "slot" if failure.index is not None and failure.index >= 1 else None
        return token

    def _drop(self, entry: dict) -> None:
        try:
            self.ctx.table.delete(entry["pk"], entry["sk"], item_exists())
        except ConditionFailed:
            pass  # another claim (or the run's own report) removed it first

    def _revoke(self, token: str) -> None:
        key = table_keys.token(table_keys.token_digest(token))
        self.ctx.table.delete(key.pk, key.sk)


def _leased(entry: dict | None, now: float) -> bool:
    lease = (entry or {}).get("lease")
    return isinstance(lease, dict) and isinstance(lease.get("until"), (int, float)) and lease["until"] > now


class _Slots:
    """A target's slots as one claim reads them, and the writes that give one to a run."""

    def __init__(self, ctx: Context, workspace: str, target: str, limit: int | None):
        self.ctx, self.workspace, self.target, self.limit = ctx, workspace, target, limit
        self.items: dict[int, dict] | None = None

    def reread(self) -> None:
        self.items = None

    def for_run(self, run_id: str, now: float) -> list[Operation] | None:
        """The operations that give `run_id` a slot (none when there is no limit); None when all are held."""
        if self.limit is None:
            return []
        if self.items is None:
            self.items = {int(i["sk"]): i for i in self.ctx.table.query_all(Query(slots_pk(self.workspace, self.target)))
                          if i["sk"].isdigit()}
        held = [(index, item) for index, item in sorted(self.items.items()) if index < self.limit]
        for index, item in held:
            if item.get("holder") == run_id:  # re-leased after its lease lapsed: it keeps its slot
                return [Check(item_key(item), attr_eq("holder", run_id))]
        for index in range(self.limit):
            if index not in self.items:
                return [self._take(index, run_id, now, item_absent())]
        lapsed: list[tuple[int, dict, dict]] = []
        for index, item in held:
            holder = item.get("holder")
            if self.ctx.table.get_item(table_keys.active_run(self.workspace, self.target, holder)) is None:
                return [self._take(index, run_id, now, attr_eq("holder", holder)),
                        Check(table_keys.active_run(self.workspace, self.target, holder), item_absent())]
            entry = self.ctx.table.get_item(table_keys.instance_queue_entry(self.workspace, self.target, holder))
            if entry is not None and isinstance(entry.get("lease"), dict) and not _leased(entry, now):
                lapsed.append((index, item, entry))
        for index, item, entry in lapsed:  # queued, but its agent is gone: its slot goes to this run
            lease, holder = entry["lease"], item["holder"]
            operations = [self._take(index, run_id, now, attr_eq("holder", holder)),
                          Check(table_keys.instance_queue_entry(self.workspace, self.target, holder),
                                all_of(attr_eq(("lease", "token"), lease.get("token")),
                                       attr_lt(("lease", "until"), now)))]
            if lease.get("token"):
                operations.append(Delete(table_keys.token(lease["token"])))
            return operations
        return None

    def _take(self, index: int, run_id: str, now: float, condition) -> Put:
        key = slot_key(self.workspace, self.target, index)
        return Put({"pk": key.pk, "sk": key.sk, "entity": "instance_slot", "holder": run_id, "since": now}, condition)


def item_key(item: dict) -> Key:
    return Key(item["pk"], item["sk"])
