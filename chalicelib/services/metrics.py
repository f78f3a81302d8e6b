"""Metrics logged by runs: scalars, lists, rows, tables and images.

Ingestion is cheap: a request carries many points per metric and they are stored as chunks (one item
holds up to CHUNK_POINTS points), written in one transaction together with the run's latest values.
Chunk keys come from the client's batch id, so a retried batch overwrites itself instead of doubling.
In a distributed run each rank logs to the same run: a metric's name is one series for all ranks, and
each chunk records the rank that logged its points.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import Conflict, Invalid, TooLarge
from chalicelib.json_codec import dumps_stored, loads
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.domain.validation import check_page_size, decode_page_token, encode_page_token, start_key
from chalicelib.services.runs import Runs
from chalicelib.store.blobs import check_key
from chalicelib.store.table import ConditionFailed, Put, Query, Update, all_of, attr_absent_or_eq, attr_in
from nimbus.naming import name_problem
from nimbus.runtime.run_states import ACTIVE

TYPES = ("scalar", "list", "row", "table", "image")
CHUNK_POINTS = 5000
CHUNK_BYTES = 300_000  # DynamoDB items stop at 400 KB
GROUP_NAMES = 25  # keeps one update expression well under DynamoDB's 4 KB
GROUP_ITEMS = 90
GROUP_BYTES = 3_000_000  # transactions stop at 4 MB
_BATCH_ID = re.compile(r"[0-9A-Za-z_-]{1,40}")
MAX_RANK = 64 * 64 - 1  # node_count and process_count_per_node are at most 64 each
_NON_FINITE = {"nan": math.nan, "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
               "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}


@dataclass
class Series:
    name: str
    type: str
    values: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    timestamps: list = field(default_factory=list)
    rank: int | None = None  # of the points parsed from one entry
    ranks: list = field(default_factory=list)  # one per point, in a history


def to_float(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.lower() in _NON_FINITE:
        return _NON_FINITE[value.lower()]
    raise Invalid(f"{where} must be a number (or 'NaN', 'Infinity', '-Infinity')", field=where)


def _check_value(kind: str, value: Any, where: str) -> Any:
    if kind == "scalar":
        return to_float(value, where)
    if kind == "list":
        if not isinstance(value, list):
            raise Invalid(f"{where} must be a list", field=where)
        return value
    if kind == "row":
        if not isinstance(value, dict) or any(isinstance(v, (dict, list)) for v in value.values()):
            raise Invalid(f"{where} must be an object of column -> scalar value", field=where)
        return value
    if kind == "table":
        if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
            raise Invalid(f"{where} must be an object of column -> list of values", field=where)
        return value
    if not isinstance(value, dict) or not isinstance(value.get("path"), str) or not value["path"].startswith("images/"):
        raise Invalid(f"{where} must be {{'path': 'images/…'}} as returned by the image upload", field=where)
    check_key(value["path"])
    return {"path": value["path"], "description": str(value.get("description", ""))[:1000]}


def parse_series(entries: list[dict]) -> list[Series]:
    """Validates the request's entries and merges entries of one name and rank (keeping their order)."""
    merged: dict[tuple[str, int | None], Series] = {}
    kinds: dict[str, str] = {}
    now = time.time()
    for index, entry in enumerate(entries):
        where = f"metrics[{index}]"
        name, kind, values = entry.get("name"), entry.get("type", "scalar"), entry.get("values")
        problem = name_problem(name)
        if problem is not None:
            raise Invalid(f"{where}.name {name!r} {problem} (docs/api.md, Names)", field=f"{where}.name")
        if kind not in TYPES:
            raise Invalid(f"{where}.type {kind!r} is unknown: use one of {', '.join(TYPES)}", field=f"{where}.type")
        if not isinstance(values, list) or not values:
            raise Invalid(f"{where}.values must be a non-empty list", field=f"{where}.values")
        steps = entry.get("steps") or [None] * len(values)
        stamps = entry.get("timestamps") or [now] * len(values)
        if len(steps) != len(values) or len(stamps) != len(values):
            raise Invalid(f"{where}: steps and timestamps must have one entry per value", field=f"{where}.steps")
        if any(s is not None and (not isinstance(s, int) or isinstance(s, bool) or s < 0) for s in steps):
            raise Invalid(f"{where}.steps must be non-negative integers", field=f"{where}.steps")
        stamps = [to_float(t, f"{where}.timestamps") for t in stamps]
        rank = _rank(entry.get("rank"), f"{where}.rank")
        if kinds.setdefault(name, kind) != kind:
            raise Invalid(f"metric {name!r} is sent as both {kinds[name]} and {kind}", field=f"{where}.type")
        series = merged.setdefault((name, rank), Series(name, kind, rank=rank))
        series.values += [_check_value(kind, v, f"{where}.values[{i}]") for i, v in enumerate(values)]
        series.steps += steps
        series.timestamps += stamps
    return list(merged.values())


def _rank(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RANK:
        raise Invalid(f"{where} must be a whole number from 0 to {MAX_RANK}", field=where)
    return value


def _chunks(run_id: str, series: Series, batch_id: str, first: int = 0) -> list[dict]:
    """Split one series into items of at most CHUNK_POINTS points and CHUNK_BYTES bytes.

    `first` numbers the items after those of the same name already cut from this batch (another rank's).
    """
    items, start = [], 0
    while start < len(series.values):
        end = min(start + CHUNK_POINTS, len(series.values))
        while True:
            data = dumps_stored({"v": series.values[start:end], "s": series.steps[start:end],
                                 "t": series.timestamps[start:end]})
            if len(data) <= CHUNK_BYTES:
                break
            if end - start == 1:
                raise TooLarge(f"one value of metric {series.name!r} exceeds {CHUNK_BYTES} bytes", field="metrics")
            end = start + (end - start) // 2
        sk = f"{table_keys.metric_prefix(series.name)}{batch_id}#{first + len(items):04d}"
        items.append({"pk": table_keys.run_pk(run_id), "sk": sk,
                      "entity": "metric_chunk", "name": series.name, "type": series.type, "count": end - start,
                      "data": data, **({} if series.rank is None else {"rank": series.rank})})
        start = end
    return items


class Metrics:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def log(self, workspace: str, run_id: str, entries: list[dict], batch_id: str | None = None) -> dict:
        if batch_id is not None and not _BATCH_ID.fullmatch(batch_id):
            raise Invalid("batch_id must be 1-40 characters of letters, digits, '_' and '-'", field="batch_id")
        batch_id = batch_id or new_id(self.ctx.clock)
        series_list = parse_series(entries)
        run = Runs(self.ctx).get(workspace, run_id)
        if run["status"] not in ACTIVE:
            raise Conflict(f"run {run_id} is {run['status']}: it takes no more metrics")
        for series in series_list:
            known = run["metric_types"].get(series.name)
            if known not in (None, series.type):
                raise Conflict(f"metric {series.name!r} is a {known}; it cannot take {series.type} values",
                               field="metrics")
        groups: list[tuple[list[Series], list[dict], int]] = [([], [], 0)]
        cut: dict[str, int] = {}  # chunks per name so far: one name's ranks share the batch's key space
        for series in series_list:
            chunks = _chunks(run_id, series, batch_id, cut.get(series.name, 0))
            cut[series.name] = cut.get(series.name, 0) + len(chunks)
            size = sum(len(c["data"]) for c in chunks)
            names, items, total = groups[-1]
            if names and (len(names) >= GROUP_NAMES or len(items) + len(chunks) > GROUP_ITEMS or total + size > GROUP_BYTES):
                groups.append(([], [], 0))
            names, items, total = groups[-1]
            groups[-1] = (names + [series], items + chunks, total + size)
        points = 0
        for names, items, _ in groups:
            self._write_group(run_id, names, items)
            points += sum(len(s.values) for s in names)
        return {"run_id": run_id, "batch_id": batch_id, "points": points, "metrics": len(cut)}

    def _write_group(self, run_id: str, series_list: list[Series], items: list[dict]) -> None:
        for start in range(0, len(items), GROUP_ITEMS):  # only a single huge series needs more than one
            part = items[start : start + GROUP_ITEMS]
            last = start + GROUP_ITEMS >= len(items)
            latest = {("metrics", s.name): s.values[-1] for s in series_list if s.type == "scalar"} if last else {}
            update = Update(table_keys.run(run_id), set={**{("metric_types", s.name): s.type for s in series_list}, **latest},
                            condition=all_of(attr_in("status", ACTIVE),
                                             *[attr_absent_or_eq(("metric_types", name), kind)
                                               for name, kind in {s.name: s.type for s in series_list}.items()]))
            try:
                self.ctx.table.transact([*[Put(i) for i in part], update])
            except ConditionFailed:
                raise Conflict(f"run {run_id} ended or a metric changed type while logging; nothing was stored "
                               "from this part of the batch") from None

    def summary(self, workspace: str, run_id: str) -> dict:
        run = Runs(self.ctx).get(workspace, run_id)
        return {name: {"type": kind, "latest": run["metrics"].get(name)} for name, kind in run["metric_types"].items()}

    def history(self, workspace: str, run_id: str, name: str, max_results: int = 10_000,
                page_token: str | None = None) -> dict:
        check_page_size(max_results, 100_000)
        run = Runs(self.ctx).get(workspace, run_id)
        if name not in run["metric_types"]:
            raise Invalid(f"run {run_id} has no metric {name!r}", field="name")
        # The token holds the key of the last chunk read in full and how many points of the next one were read.
        state = decode_page_token(page_token) or {}
        pk, prefix = table_keys.run_pk(run_id), table_keys.metric_prefix(name)
        before, skip = start_key(state), state.get("i", 0)
        if (before is not None and (before.get("pk") != pk or not before.get("sk", "").startswith(prefix))) \
                or not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
            raise Invalid("page_token does not belong to this metric", field="page_token")
        result = Series(name, run["metric_types"][name])
        token = None
        while token is None:
            page = self.ctx.table.query(Query(pk, sk_prefix=prefix, limit=50, start=before))
            for position, item in enumerate(page.items):
                data = loads(item["data"])
                end = skip + max_results - len(result.values)
                result.values += data["v"][skip:end]
                result.steps += data["s"][skip:end]
                result.timestamps += data["t"][skip:end]
                result.ranks += [item.get("rank")] * len(data["v"][skip:end])
                if end < len(data["v"]):  # the page ends inside this chunk
                    token = {"k": before, "i": end}
                    break
                skip, before = 0, {"pk": item["pk"], "sk": item["sk"]}
                if len(result.values) >= max_results:
                    if position + 1 < len(page.items) or page.next is not None:
                        token = {"k": before}
                    break
            if len(result.values) >= max_results or page.next is None:
                break
            before = page.next
        token = encode_page_token(token) if token else None
        return {"name": name, "type": result.type, "values": result.values, "steps": result.steps,
                "timestamps": result.timestamps, "ranks": result.ranks, "next_page_token": token}
