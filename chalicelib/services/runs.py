"""Runs: status machine, tags (mutable), properties (write-once), child runs to any depth."""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from chalicelib.errors import Conflict, Invalid, NotFound
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.domain.timestamps import parse_iso
from chalicelib.domain.validation import (
    ENTRY_KEY, MAX_TAGS, check_entries, check_experiment_name, check_page_size, decode_page_token, encode_page_token,
    start_key,
)
from chalicelib.services.experiments import Experiments
from chalicelib.services.run_search import search_runs
from chalicelib.services.run_views import run_summary
from chalicelib.services.identity import Principal
from chalicelib.store.table import (
    Check, Cond, ConditionFailed, Delete, Operation, Put, Query, Update, all_of, any_of, attr_absent, attr_absent_or_eq,
    attr_eq, attr_in, attr_lt, item_absent, item_exists,
)
from nimbus.runtime.run_states import ACTIVE, STATUSES, TERMINAL, TRANSITIONS

MAX_ENTRIES_BYTES = 64 * 1024
CHILD_SUMMARY_LIMIT = 1000
MAX_DEPTH = 100  # child runs nest at most this deep
MAX_ERROR_BYTES = 32_000
MAX_ERROR_DEPTH = 16  # DynamoDB nests documents at most 32 levels deep
RUNNER_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
MAX_ATTEMPTS = 10  # AWS Batch runs a job at most 10 times


@dataclass(frozen=True)
class Reporter:
    """Who sends a status report or a heartbeat: a runner process (`runner_id`, random per process) and the
    AWS Batch attempt it runs in (`attempt`, 1-based; 1 off Batch). Either may be None: a user's report, a
    child node of a multi-node job (attempt only), a runner that predates them."""

    runner_id: str | None = None
    attempt: int | None = None

    def __post_init__(self):
        if self.runner_id is not None and not (isinstance(self.runner_id, str) and RUNNER_ID.fullmatch(self.runner_id)):
            raise Invalid("runner_id must be 8-64 letters, digits, '-' or '_'", field="runner_id")
        if self.attempt is not None and (isinstance(self.attempt, bool) or not isinstance(self.attempt, int)
                                         or not 1 <= self.attempt <= MAX_ATTEMPTS):
            raise Invalid(f"attempt must be a whole number from 1 to {MAX_ATTEMPTS}", field="attempt")


def check_room(current: dict[str, str], added: dict[str, str], field: str) -> None:
    """A run item must stay far below DynamoDB's 400 KB: tags and properties share MAX_ENTRIES_BYTES each."""
    merged = {**current, **added}
    if len(merged) > MAX_TAGS or sum(len(k) + len(v) for k, v in merged.items()) > MAX_ENTRIES_BYTES:
        raise Invalid(f"a run holds at most {MAX_TAGS} {field} of {MAX_ENTRIES_BYTES} characters in all", field=field)


def check_error(error: Any) -> dict:
    """A run's error report is stored as a document: small, shallow, with integers both stores keep exact."""

    def storable(value: Any, depth: int) -> bool:
        if depth > MAX_ERROR_DEPTH:
            return False
        if isinstance(value, dict):
            return all(isinstance(k, str) and storable(v, depth + 1) for k, v in value.items())
        if isinstance(value, list):
            return all(storable(v, depth + 1) for v in value)
        if isinstance(value, int) and not isinstance(value, bool):
            return -(2**63) <= value < 2**63
        return value is None or isinstance(value, (str, float, bool))

    if not isinstance(error, dict) or not storable(error, 1) or len(json.dumps(error)) > MAX_ERROR_BYTES:
        raise Invalid(f"error must be an object of at most {MAX_ERROR_BYTES} bytes, nested at most {MAX_ERROR_DEPTH} "
                      "deep, with integers of at most 64 bits", field="error")
    return error


class Runs:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    # --- create and read ------------------------------------------------------------------------
    def create(self, principal: Principal, workspace: str, experiment: str | None, *, parent_id: str | None = None,
               tags: dict | None = None, properties: dict | None = None, display_name: str | None = None,
               status: str = "NotStarted", submission: dict | None = None,
               extra_operations: Sequence[Operation] = (), run_id: str | None = None) -> dict:
        """`submission` (snapshot_id, run_config, git, ci, compute_target) is stored on the run; `extra_operations` join
        its transaction, and a ConditionFailed among them is raised as is for the caller."""
        tags, properties = check_entries(tags or {}, "tags"), check_entries(properties or {}, "properties")
        check_room({}, tags, "tags")
        check_room({}, properties, "properties")
        if status not in ("NotStarted", "Queued", "Running"):
            raise Invalid("a new run starts as NotStarted, Queued or Running", field="status")
        parent = self.get(workspace, parent_id) if parent_id else None
        if parent is not None:
            if parent["status"] in TERMINAL:
                raise Conflict(f"parent run {parent_id} is {parent['status']}; it cannot get new children")
            if parent["depth"] + 1 >= MAX_DEPTH:
                raise Invalid(f"child runs nest at most {MAX_DEPTH} deep", field="parent_id")
            if experiment not in (None, parent["experiment"]):
                raise Invalid("a child run belongs to its parent's experiment", field="experiment")
            experiment = parent["experiment"]
        if experiment is None:
            raise Invalid("experiment is required", field="experiment")
        check_experiment_name(experiment)
        now, run_id = self.ctx.now(), run_id or new_id(self.ctx.clock)
        key = table_keys.run(run_id)
        item = {
            "pk": key.pk, "sk": key.sk, "entity": "run", "id": run_id, "workspace": workspace,
            "experiment": experiment, "status": status, "created": now, "started": now if status == "Running" else None,
            "ended": None, "duration_s": None, "submitted_by": principal.user,
            "display_name": (display_name or run_id)[:255], "tags": tags, "properties": properties, "error": None,
            "parent_id": parent_id, "root_id": parent["root_id"] if parent else run_id,
            "depth": parent["depth"] + 1 if parent else 0, "metrics": {}, "metric_types": {},
            "gsi1pk": table_keys.experiment_runs_index_pk(workspace, experiment), "gsi1sk": f"{now}#{run_id}",
        }
        operations = [Put(item, item_absent()), Experiments(self.ctx).upsert_for_new_run(workspace, experiment, principal.user),
                      Check(table_keys.workspace(workspace), item_exists())]
        if parent is not None:
            item["gsi2pk"], item["gsi2sk"] = table_keys.children_index_pk(parent_id), f"{now}#{run_id}"
            operations.append(Check(table_keys.run(parent_id), attr_eq("status", parent["status"])))
        item.update(submission or {})
        own = len(operations)
        try:
            self.ctx.table.transact([*operations, *extra_operations])
        except ConditionFailed as failure:
            if failure.index is not None and failure.index >= own:
                raise
            if failure.index == 2:
                raise NotFound(f"workspace {workspace!r} not found") from None
            raise Conflict("the parent run changed while the child was created; retry") from None
        return item

    def get(self, workspace: str, run_id: str) -> dict:
        item = self.ctx.table.get_item(table_keys.run(run_id)) if _plausible_id(run_id) else None
        if item is None or item["workspace"] != workspace:
            raise NotFound(f"run {run_id!r} not found in workspace {workspace!r}")
        return item

    def descends_from(self, workspace: str, run_id: str, ancestor_id: str) -> bool:
        """Whether `run_id` is `ancestor_id` or one of its child runs, at any depth."""
        current = run_id
        for _ in range(MAX_DEPTH):
            if current == ancestor_id:
                return True
            item = self.ctx.table.get_item(table_keys.run(current)) if _plausible_id(current) else None
            if item is None or item["workspace"] != workspace or not item.get("parent_id"):
                return False
            current = item["parent_id"]
        return False

    def children(self, workspace: str, run_id: str, max_results: int = 100, page_token: str | None = None) -> dict:
        self.get(workspace, run_id)
        check_page_size(max_results)
        page = self.ctx.table.query(Query(table_keys.children_index_pk(run_id), index="gsi2", limit=max_results,
                                          start=start_key(decode_page_token(page_token), gsi2pk=table_keys.children_index_pk(run_id))))
        return {"runs": [run_summary(i) for i in page.items],
                "next_page_token": encode_page_token({"k": page.next}) if page.next else None}

    def children_statuses(self, run_id: str) -> dict[str, int]:
        query = Query(table_keys.children_index_pk(run_id), index="gsi2", limit=CHILD_SUMMARY_LIMIT)
        return dict(Counter(i["status"] for i in self.ctx.table.query(query).items))

    # --- change ---------------------------------------------------------------------------------
    def set_tags(self, workspace: str, run_id: str, tags: dict, remove: list[str] | None = None) -> dict:
        check_entries(tags, "tags")
        remove = list(remove or [])
        for index, key in enumerate(remove):
            if not isinstance(key, str) or not ENTRY_KEY.fullmatch(key):
                raise Invalid(f"remove[{index}] must be a tag key of 1-255 printable characters", field=f"remove[{index}]")
        if len(tags) + len(remove) == 0:
            raise Invalid("give tags to set or remove", field="tags")
        check_room(self.get(workspace, run_id)["tags"], tags, "tags")
        update = Update(table_keys.run(run_id), set={("tags", k): v for k, v in tags.items()},
                        remove=[("tags", k) for k in remove if k not in tags], condition=item_exists())
        return self.ctx.table.update(update)

    def add_properties(self, workspace: str, run_id: str, properties: dict) -> dict:
        check_entries(properties, "properties")
        if not properties:
            raise Invalid("give at least one property", field="properties")
        check_room(self.get(workspace, run_id)["properties"], properties, "properties")
        condition = all_of(item_exists(), *[attr_absent_or_eq(("properties", k), v) for k, v in properties.items()])
        try:
            return self.ctx.table.update(Update(table_keys.run(run_id), set={("properties", k): v for k, v in properties.items()},
                                                condition=condition))
        except ConditionFailed:
            current = self.get(workspace, run_id)["properties"]
            taken = sorted(k for k, v in properties.items() if k in current and current[k] != v)
            raise Conflict(f"properties are write-once; already set: {', '.join(taken)}", field="properties") from None

    def heartbeat(self, workspace: str, run_id: str, reporter: Reporter | None = None) -> dict:
        """The runner is alive: `heartbeat` = now, while the run has not ended (compute/batch/reconciliation.py
        fails a Running run whose heartbeats stop) and, given a `reporter`, while no other runner or later
        attempt holds the run (409 otherwise)."""
        run = self.get(workspace, run_id)
        if reporter is not None:
            _check_holder(run, reporter)
        condition = all_of(attr_in("status", ACTIVE), _reporter_condition(run, reporter))
        try:
            return self.ctx.table.update(Update(table_keys.run(run_id), set={"heartbeat": self.ctx.now()},
                                                condition=condition))
        except ConditionFailed:
            run = self.get(workspace, run_id)
            if run["status"] in TERMINAL:
                raise Conflict(f"run {run_id} has ended") from None
            _check_holder(run, reporter or Reporter())
            raise Conflict(f"run {run_id} changed meanwhile; retry") from None

    def transition(self, workspace: str, run_id: str, status: str, error: dict | None = None,
                   reporter: Reporter | None = None) -> dict:
        """Moves the run along TRANSITIONS. A runner's report names its `reporter`: its Preparing makes it
        the run's holder (`runner_id`, `attempt`, an entry in `attempts`), and its later reports are
        refused (409) once another runner holds the run. A holder repeating its current status gets the run
        back unchanged. The Preparing of a later Batch attempt than the holder's restarts an active run."""
        if status not in STATUSES:
            raise Invalid(f"status must be one of {', '.join(STATUSES)}", field="status")
        if error is not None:
            check_error(error)
        for _ in range(5):  # optimistic: re-read and retry when another writer moved the run meanwhile
            run = self.get(workspace, run_id)
            current = run["status"]
            if current == status and status in TERMINAL:
                return run  # repeating a final report is harmless (runners retry)
            claim = _claim(run, status, reporter) if reporter is not None else None
            if claim == "repeat":
                return run  # the holder's own report again (its retried request had gone through)
            if claim != "restart" and status not in TRANSITIONS.get(current, set()):
                raise Conflict(f"run {run_id} cannot go from {current} to {status}", field="status")
            now = self.ctx.now()
            changes: dict = {"status": status}
            if status == "Running" and not run.get("started"):
                changes["started"] = now
            if status in TERMINAL:
                changes["ended"] = now
                changes["duration_s"] = round(parse_iso(now) - parse_iso(run.get("started") or run["created"]), 3)
                if error is not None:
                    changes["error"] = error
            condition = all_of(attr_eq("status", current), _reporter_condition(run, reporter))
            if claim is not None:  # "first" or "restart": this runner holds the run from now on
                attempt = reporter.attempt or 1
                changes.update({"runner_id": reporter.runner_id, "attempt": attempt, "heartbeat": now,
                                "attempts": merge_attempt(run.get("attempts") or [], attempt,
                                                          {"runner_id": reporter.runner_id, "started": now})})
                condition = all_of(condition, _attempts_as_read(run))
            update = Update(table_keys.run(run_id), set=changes, condition=condition)
            also: list = []
            if status in TERMINAL and run.get("compute_target"):  # the target no longer counts it as active
                also.append(Delete(table_keys.active_run(workspace, run["compute_target"], run_id)))
            if current == "Queued" and run.get("compute_target"):  # off an instance target's queue (no-op otherwise)
                also.append(Delete(table_keys.instance_queue_entry(workspace, run["compute_target"], run_id)))
            try:
                if also:
                    self.ctx.table.transact([update, *also])
                    return self.get(workspace, run_id)
                return self.ctx.table.update(update)
            except ConditionFailed:
                continue
        raise Conflict(f"run {run_id} is changing too often; retry")

    def note_attempt_ends(self, workspace: str, run_id: str, ends: dict[int, dict]) -> bool:
        """Records how earlier Batch attempts of an active run ended (`{attempt: {"ended", "end_reason",
        "exit_code"}}`) in its `attempts`; what an entry already holds stays. False when nothing changed."""
        for _ in range(5):
            run = self.get(workspace, run_id)
            if run["status"] in TERMINAL:
                return False
            merged = run.get("attempts") or []
            for number, fields in sorted(ends.items()):
                merged = merge_attempt(merged, number, fields, keep=True)
            if merged == (run.get("attempts") or []):
                return False
            try:
                self.ctx.table.update(Update(table_keys.run(run_id), set={"attempts": merged}, condition=all_of(
                    attr_in("status", ACTIVE), _attempts_as_read(run))))
                return True
            except ConditionFailed:
                continue
        raise Conflict(f"run {run_id} is changing too often; retry")

    # --- search ---------------------------------------------------------------------------------
    def search(self, workspace: str, experiment: str, *, statuses: list[str] | None = None,
               tags: list[tuple[str, str | None]] | None = None, metrics: list[tuple[str, str, float]] | None = None,
               top_level: bool = False, order_by: str = "created", descending: bool = True, max_results: int = 100,
               page_token: str | None = None) -> dict:
        """Runs of one experiment (without child runs when `top_level`): one Query of the experiment's
        index partition, filtered and sorted here."""
        check_experiment_name(experiment)
        return search_runs(self.ctx.table, table_keys.experiment_runs_index_pk(workspace, experiment),
                           statuses=statuses or [], tags=tags or [], metrics=metrics or [], top_level=top_level,
                           order_by=order_by,
                           descending=descending, max_results=max_results, page_token=page_token)


def _claim(run: dict, status: str, reporter: Reporter) -> str | None:
    """What a runner's report means for who holds the run: "first" (its Preparing claims a run nobody
    holds), "restart" (the Preparing of a later Batch attempt takes over an active run), "repeat" (the
    holder's current status again) or None (an ordinary report). Raises Conflict when it may not report."""
    _check_holder(run, reporter, status)
    holder, current = run.get("runner_id"), run["status"]
    if reporter.runner_id is None:
        return None
    if holder == reporter.runner_id:
        return "repeat" if current == status and current not in TERMINAL else None
    if status != "Preparing":
        return None  # a run nobody holds (made before runners named themselves): reported as ever
    return "first" if holder is None else "restart"


def _check_holder(run: dict, reporter: Reporter, status: str | None = None) -> None:
    """Refuses (409) a report or beat of an attempt older than the run's, or of a runner other than the
    one holding the run, unless it is the Preparing of a later attempt while the run is active."""
    holder, recorded = run.get("runner_id"), run.get("attempt")
    if reporter.attempt is not None and recorded is not None and reporter.attempt < recorded:
        raise Conflict(f"run {run['id']} is on attempt {recorded}: attempt {reporter.attempt} may no longer report it",
                       field="attempt")
    if reporter.runner_id is None or holder is None or holder == reporter.runner_id:
        return
    if status == "Preparing" and (reporter.attempt or 1) > (recorded or 1) and run["status"] not in TERMINAL:
        return
    raise Conflict(f"run {run['id']} is held by another runner (attempt {recorded or 1})", field="runner_id")


def _reporter_condition(run: dict, reporter: Reporter | None) -> Cond | None:
    """The holder and attempt as read still hold when the write lands: two reports cannot both win."""
    if reporter is None:
        return None
    parts = []
    if reporter.runner_id is not None:
        parts.append(attr_eq("runner_id", run["runner_id"]) if run.get("runner_id") else attr_absent("runner_id"))
    if reporter.attempt is not None:
        parts.append(any_of(attr_absent("attempt"), attr_lt("attempt", reporter.attempt + 1)))
    return all_of(*parts)


def _attempts_as_read(run: dict) -> Cond:
    return attr_eq("attempts", run["attempts"]) if run.get("attempts") is not None else attr_absent("attempts")


def merge_attempt(attempts: list[dict], number: int, fields: dict, *, keep: bool = False) -> list[dict]:
    """`attempts` (ordered by `attempt`) with `fields` set on attempt `number`'s entry, made when missing;
    `keep` leaves the fields the entry already has. Attempts past MAX_ATTEMPTS are not recorded."""
    if not 1 <= number <= MAX_ATTEMPTS:
        return attempts
    merged = {entry["attempt"]: dict(entry) for entry in attempts}
    entry = merged.setdefault(number, {"attempt": number})
    for name, value in fields.items():
        if value is not None and not (keep and entry.get(name) is not None):
            entry[name] = value
    return [merged[n] for n in sorted(merged)]


def _plausible_id(run_id: str) -> bool:
    return isinstance(run_id, str) and 0 < len(run_id) <= 64 and run_id.isalnum()


