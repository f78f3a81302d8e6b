"""A deployment revision's rollout, kept on the deployment's item (deployments.py).

Making a scoring function run can take longer than a request may last (on AWS a new Lambda function is
Pending, an updated one InProgress, for seconds to minutes), so a deploy records the revision `Creating`
(the deployment's first) or `Updating` (a later one: the revision before keeps serving until the new one
is routed), has the host start it (`FunctionHost.deploy`, which never waits) and answers. Each later step
is taken by whoever looks next: a read of the deployment or of its endpoint, a deploy into the same
endpoint, or the scheduled sweep (`sweep`, from api/batch_events.py). It ends `Succeeded` or `Failed`
with the reason; a rollout not done after ROLLOUT_TIMEOUT_S fails, and what it made is undone.

A step holds the endpoint's lease (only one change of an endpoint's function at a time), re-reads the
item, asks the host for one look further (`FunctionHost.advance`) and records the answer with a
condition on the revision, state and `progress` read: two lookers at once take a step once, so a
version is published once. A looker that finds the lease held leaves the step to the next look.
"""
from __future__ import annotations

import logging

from chalicelib.errors import Conflict, NimbusError, NotFound, Unavailable
from chalicelib.hosting.port import FAILED, IN_PROGRESS, SUCCEEDED, DeploymentSpec, FunctionHost, HostState
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.timestamps import parse_iso
from chalicelib.services.endpoint_lease import EndpointLease
from chalicelib.store.table import ConditionFailed, Key, Query, Update, all_of, attr_eq, attr_in

log = logging.getLogger(__name__)

ROLLING_OUT = ("Creating", "Updating")  # a deployment's states while its latest revision is on its way
ROLLOUT_TIMEOUT_S = 20 * 60  # a revision still on its way this long after its deploy is Failed
STEP_LEASE_S = 120  # how long one step may hold the endpoint before another looker may take over
PENDING_PK = "DEPLOYPENDING"  # sk `<ws>#<endpoint>#<deployment>`: a deployment rolling out (the sweep's list)


def pending_key(workspace: str, endpoint: str, name: str) -> Key:
    return Key(PENDING_PK, f"{workspace}#{endpoint}#{name}")


def pending_entry(item: dict) -> dict:
    key = pending_key(item["workspace"], item["endpoint"], item["name"])
    return {"pk": key.pk, "sk": key.sk, "entity": "deployment_pending", "workspace": item["workspace"],
            "endpoint": item["endpoint"], "name": item["name"], "created": item["updated"]}


class DeploymentLifecycle:
    def __init__(self, ctx: Context, host: FunctionHost | None):
        self.ctx = ctx
        self.host = host

    def begin(self, item: dict, spec: DeploymentSpec, previous: dict | None) -> dict:
        """The deploy request's step, under the endpoint's lease: the host starts the revision `item`
        records (`previous`: the details of the revision serving now)."""
        try:
            state = self.host.deploy(spec, previous)
        except Exception as error:  # noqa: BLE001 - the deployment records why, the caller is told
            state = HostState(FAILED, f"{type(error).__name__}: {error}")
        return self._record(item, state)

    def refresh(self, item: dict) -> dict:
        """The item with its rollout taken one look further; as it is when another change holds the endpoint."""
        if item.get("state") not in ROLLING_OUT or self.host is None:
            return item
        try:
            with EndpointLease(self.ctx, item["workspace"], item["endpoint"], STEP_LEASE_S):
                current = self.ctx.table.get_item(_key(item))
                return item if current is None else self.advance_held(current)
        except (Conflict, NotFound):  # another change holds the endpoint (or it is gone): the next look goes on
            return item

    def advance_held(self, item: dict) -> dict:
        """One look further, by a caller that holds the endpoint's lease and has just read `item`."""
        if item.get("state") not in ROLLING_OUT:
            return item
        if self.ctx.clock() - parse_iso(item["updated"]) > ROLLOUT_TIMEOUT_S:
            return self._time_out(item)
        if item.get("rollout") is None:
            return item  # its deploy request is still starting it
        try:
            state = self.host.advance(item["rollout"])
        except Unavailable as busy:
            log.warning("deployment %s not advanced: %s", item["sk"], busy.message)
            return item
        except Exception as error:  # noqa: BLE001 - the deployment records why
            log.exception("deployment %s: its rollout failed", item["sk"])
            self._abandon(item)
            state = HostState(FAILED, f"{type(error).__name__}: {error}")
        return self._record(item, state)

    def _time_out(self, item: dict) -> dict:
        step = (item.get("rollout") or {}).get("step")
        self._abandon(item)
        where = f" (its rollout was at step {step!r})" if step else ""
        return self._record(item, HostState(FAILED, f"the scoring function was not ready {ROLLOUT_TIMEOUT_S // 60} "
                                                    f"minutes after the deploy{where}; deploy again"))

    def _abandon(self, item: dict) -> None:
        if not item.get("rollout"):
            return
        try:
            self.host.abandon(item["rollout"])
        except NimbusError as error:
            log.error("deployment %s: what its rollout made was not all undone: %s", item["sk"], error.message)

    def _record(self, item: dict, state: HostState) -> dict:
        """What the host answered, unless the deployment changed meanwhile (then: as it is now)."""
        progress = int(item.get("progress") or 0)
        condition = all_of(attr_eq("revision", item["revision"]), attr_eq("state", item["state"]),
                           attr_eq("progress", progress))
        changes: dict = {"progress": progress + 1}
        if state.state == IN_PROGRESS:
            changes["rollout"] = state.rollout
        else:
            changes.update(state=state.state, error=state.error, settled=self.ctx.now())
            if state.details or state.state == SUCCEEDED:
                changes["host"] = state.details
        try:
            done = self.ctx.table.update(Update(_key(item), set=changes, condition=condition,
                                                remove=[] if state.state == IN_PROGRESS else ["rollout"]))
        except ConditionFailed:
            return self.ctx.table.get_item(_key(item)) or item
        if done["state"] in ROLLING_OUT:
            return done
        pending = pending_key(done["workspace"], done["endpoint"], done["name"])
        self.ctx.table.delete(pending.pk, pending.sk)
        log.info("deployment %s revision %s %s%s", done["sk"], done["revision"], done["state"],
                 f": {done['error']}" if done.get("error") else "")
        if done["state"] == SUCCEEDED:
            self.reroute(done["workspace"], done["endpoint"])
        return done

    def reroute(self, workspace: str, endpoint: str) -> None:
        """The endpoint's weights applied again after a change that routed what it needed itself (a rollout,
        a deletion); a failure is logged, not raised: the change is done."""
        try:
            self.route(workspace, endpoint)
        except NimbusError as error:
            log.warning("endpoint %s/%s: traffic not applied again: %s", workspace, endpoint, error.message)

    def route(self, workspace: str, endpoint: str) -> None:
        """The endpoint's traffic weights, as recorded, applied by the host."""
        item = self.ctx.table.get_item(table_keys.endpoint(workspace, endpoint))
        if item is None:
            return
        deployments = self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace),
                                                     sk_prefix=table_keys.deployment_prefix(endpoint)))
        details = {d["name"]: d.get("host") or {} for d in deployments}
        self.host.set_traffic(workspace, endpoint, dict(item["traffic"]), details)

    def record_state(self, workspace: str, endpoint: str, name: str, revision: int, state: str,
                     error: str | None) -> None:
        """A host's own report on a settled revision (a local host that keeps crashing, or came back);
        stale revisions, and revisions still rolling out, are left as they are."""
        try:
            self.ctx.table.update(Update(table_keys.deployment(workspace, endpoint, name),
                                         set={"state": state, "error": error, "updated": self.ctx.now()},
                                         condition=all_of(attr_eq("revision", revision),
                                                          attr_in("state", (SUCCEEDED, FAILED)))))
        except ConditionFailed:
            pass  # a stale revision, or one rolling out: its own lifecycle has the last word

    def sweep(self) -> dict[str, int]:
        """Every deployment rolling out, one look further (the 5-minute schedule calls it)."""
        counts = {"checked": 0, "settled": 0}
        if self.host is None:
            return counts
        for entry in list(self.ctx.table.query_all(Query(PENDING_PK))):
            counts["checked"] += 1
            item = self.ctx.table.get_item(table_keys.deployment(entry["workspace"], entry["endpoint"], entry["name"]))
            if item is not None:
                item = self.refresh(item)
            if item is None or item.get("state") not in ROLLING_OUT:  # deleted, or done
                self.ctx.table.delete(entry["pk"], entry["sk"])
                counts["settled"] += 1
        return counts


def _key(item: dict) -> Key:
    return table_keys.deployment(item["workspace"], item["endpoint"], item["name"])
