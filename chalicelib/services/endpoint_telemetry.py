"""Endpoint telemetry, read side: a window of per-minute counters summed, histograms merged.

The scoring processes write the items (chalicelib/scoring/telemetry_recorder.py, which defines their layout);
this reads a window with ONE Query on the endpoint's partition, narrowed to the window's sort-key
range, and removes the items when the endpoint goes.

Percentiles come from the merged log-scale histogram, whose buckets are 10% wide: a figure is the
bucket's geometric middle, within ±5% of the exact percentile of the requests in the window.
"""
from __future__ import annotations

from chalicelib.errors import Invalid
from chalicelib.scoring.telemetry_recorder import histogram_of, minute_label, percentile_ms, telemetry_pk
from chalicelib.domain.context import Context
from chalicelib.store.table import Key, Query

MAX_WINDOW_MINUTES = 30 * 24 * 60  # what the items' TTL keeps


class EndpointTelemetry:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def summary(self, workspace: str, endpoint: str, minutes: int = 60) -> dict:
        """The last `minutes` minutes, the current one included, overall and per deployment."""
        if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= MAX_WINDOW_MINUTES:
            raise Invalid(f"minutes must be a whole number from 1 to {MAX_WINDOW_MINUTES}", field="minutes")
        last = int(self.ctx.clock() // 60)
        first = last - minutes + 1
        # Sort keys are "<minute>#<deployment>" with fixed-width minutes; '$' sorts right after '#'.
        query = Query(telemetry_pk(workspace, endpoint), sk_gte=f"{minute_label(first)}#",
                      sk_lte=f"{minute_label(last)}$")
        total = _Sum()
        per_deployment: dict[str, _Sum] = {}
        for item in self.ctx.table.query_all(query):
            name = item.get("deployment") or item["sk"].split("#", 1)[1]
            total.add(item)
            per_deployment.setdefault(name, _Sum()).add(item)
        return {"window_minutes": minutes, **total.view(),
                "deployments": {name: part.view() for name, part in sorted(per_deployment.items())}}

    def delete_endpoint(self, workspace: str, endpoint: str) -> int:
        """Remove every telemetry item of the endpoint; returns how many there were."""
        items = self.ctx.table.query_all(Query(telemetry_pk(workspace, endpoint)))
        keys = [Key(item["pk"], item["sk"]) for item in items]
        for start in range(0, len(keys), 25):  # BatchWriteItem's size
            self.ctx.table.batch_delete(keys[start:start + 25])
        return len(keys)


class _Sum:
    __slots__ = ("requests", "errors", "histogram")

    def __init__(self):
        self.requests = 0
        self.errors = 0
        self.histogram: dict[int, int] = {}

    def add(self, item: dict) -> None:
        self.requests += int(item.get("count") or 0)
        self.errors += int(item.get("errors") or 0)
        for index, n in histogram_of(item).items():
            self.histogram[index] = self.histogram.get(index, 0) + n

    def view(self) -> dict:
        return {"requests": self.requests, "errors": self.errors,
                "p50_ms": percentile_ms(self.histogram, 50), "p95_ms": percentile_ms(self.histogram, 95)}
