"""Filtering and ordering an experiment's runs.

The experiment's runs sit in one index partition (gsi1, sorted by creation time) and each item carries
the run's tags and the latest value of every scalar metric, so one Query reads everything a filter or an
ordering needs. Filtering and sorting by an arbitrary metric happen here, over that partition.
"""
from __future__ import annotations

import hashlib
import json
import math
import operator

from chalicelib.errors import Invalid
from chalicelib.domain.validation import check_page_size, decode_page_token, encode_page_token
from chalicelib.services.run_views import run_summary
from chalicelib.store.table import Query, Table
from nimbus.runtime.run_states import STATUSES

OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "=": operator.eq, "!=": operator.ne}
ORDER_FIELDS = ("created", "started", "ended", "duration_s", "status")


def search_runs(table: Table, partition: str, *, statuses, tags, metrics, top_level, order_by, descending,
                max_results, page_token) -> dict:
    check_page_size(max_results)
    for status in statuses:
        if status not in STATUSES:
            raise Invalid(f"status must be one of {', '.join(STATUSES)}", field="status")
    for _, op, _ in metrics:
        if op not in OPERATORS:
            raise Invalid(f"metric filter operator must be one of {' '.join(OPERATORS)}", field="metric")
    if order_by not in ORDER_FIELDS and not order_by.startswith("metrics."):
        raise Invalid(f"order_by must be one of {', '.join(ORDER_FIELDS)} or metrics.<name>", field="order_by")

    fingerprint = hashlib.sha256(json.dumps([partition, statuses, tags, metrics, top_level, order_by, descending],
                                            default=str).encode()).hexdigest()[:16]
    state = decode_page_token(page_token) or {"o": 0, "f": fingerprint}
    offset = state.get("o")
    if state.get("f") != fingerprint or not isinstance(offset, int) or offset < 0:
        raise Invalid("page_token does not belong to this search", field="page_token")

    matched = [item for item in table.query_all(Query(partition, index="gsi1", forward=not descending))
               if not (top_level and item.get("parent_id")) and _matches(item, statuses, tags, metrics)]
    if order_by != "created":
        matched = _ordered(matched, order_by, descending)
    page = matched[offset : offset + max_results]
    more = offset + max_results < len(matched)
    return {"runs": [run_summary(i) for i in page], "total": len(matched),
            "next_page_token": encode_page_token({"o": offset + max_results, "f": fingerprint}) if more else None}


def _matches(item: dict, statuses, tags, metrics) -> bool:
    if statuses and item["status"] not in statuses:
        return False
    run_tags = item.get("tags") or {}
    for key, value in tags:
        if key not in run_tags or (value is not None and run_tags[key] != value):
            return False
    latest = item.get("metrics") or {}
    for name, op, threshold in metrics:
        value = latest.get(name)
        if not isinstance(value, (int, float)) or math.isnan(value) or not OPERATORS[op](value, threshold):
            return False
    return True


def _ordered(items: list[dict], order_by: str, descending: bool) -> list[dict]:
    """Runs without the value (or with NaN) go last, whatever the direction."""
    metric = order_by[len("metrics."):] if order_by.startswith("metrics.") else None
    present, missing = [], []
    for item in items:
        value = (item.get("metrics") or {}).get(metric) if metric else item.get(order_by)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing.append(item)
        else:
            present.append((value, item["created"], item))
    present.sort(key=lambda entry: entry[:2], reverse=descending)
    return [entry[2] for entry in present] + missing
