"""The lease that serialises changes of one endpoint (deployments.py, deployment_lifecycle.py).

On AWS every deployment of an endpoint is a version of one Lambda function, and the alias routing its
traffic is one too: a deploy, a step of a rollout, a traffic change, a key change and a delete each hold
the endpoint's lease, a token with an expiry on its item taken by a conditional write. A holder that dies
loses it when it lapses.
"""
from __future__ import annotations

import secrets
from typing import Callable

from chalicelib.errors import Conflict, NotFound
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.store.table import ConditionFailed, Update, all_of, any_of, attr_absent, attr_eq, attr_lt, item_exists

LEASE_SECONDS = 900  # longest a deploy may hold its endpoint; a crashed holder's lease lapses after it


class EndpointLease:
    """`with EndpointLease(...)`: Conflict while another holds it; NotFound when the endpoint does not
    exist, unless `create` is given: it is called once to make the endpoint, then the lease is taken."""

    def __init__(self, ctx: Context, workspace: str, endpoint: str, seconds: float = LEASE_SECONDS,
                 create: Callable[[], None] | None = None):
        self.ctx, self.workspace, self.endpoint = ctx, workspace, endpoint
        self.seconds, self.create = seconds, create
        self.token = secrets.token_hex(8)

    def __enter__(self) -> "EndpointLease":
        now, key = self.ctx.clock(), table_keys.endpoint(self.workspace, self.endpoint)
        for attempt in range(2):
            try:
                self.ctx.table.update(Update(key, set={"lease": {"token": self.token, "until": now + self.seconds}},
                                             condition=all_of(item_exists(), lease_free(now))))
                return self
            except ConditionFailed:
                if self.ctx.table.get_item(key) is not None:
                    raise Conflict(f"endpoint {self.endpoint!r} is being changed by another request; "
                                   "try again when it is done", field="endpoint") from None
                if self.create is None or attempt:
                    raise NotFound(f"endpoint {self.endpoint!r} not found", field="endpoint") from None
                self.create()
        raise AssertionError("unreachable")

    def __exit__(self, *exc) -> bool:
        try:
            self.ctx.table.update(Update(table_keys.endpoint(self.workspace, self.endpoint), remove=["lease"],
                                         condition=attr_eq(("lease", "token"), self.token)))
        except ConditionFailed:
            pass  # the endpoint was deleted (by this very request), or the lease lapsed and moved on
        return False


def lease_free(now: float):
    return any_of(attr_absent("lease"), attr_lt(("lease", "until"), now))
