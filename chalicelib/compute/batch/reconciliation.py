"""Keeps runs on AWS Batch honest when their runner cannot report: Batch's events and a periodic sweep.

The runner reports a run's progress itself. What it cannot report is its own death: a job that fails
before the runner starts (image pull, no capacity fitting the request, a timeout, the host going away),
a container killed by the out-of-memory killer, a job deleted behind Nimbus's back. Two paths close that gap:

- `on_job_event`: EventBridge's "Batch Job State Change" events. FAILED (the job's last attempt ended)
  ends the run as Failed with Batch's `statusReason`. An event of a job that Batch runs again after an
  attempt ended (the host went away: RUNNABLE, STARTING, RUNNING with `attempts`) records how those
  attempts ended in the run's `attempts`; the new attempt's runner restarts the run (services/runs.py).
  Other states change nothing (the runner reports them better).
- `sweep`: every few minutes, for the runs handed to Batch and not yet ended: a job Batch no longer
  knows, a failed job whose event was lost, a job that ended without the runner reporting, or a
  running run whose runner stopped sending heartbeats ends as Failed, with the reason. Heartbeats are
  not expected of a job waiting for its next attempt, and their silence counts from the end of the
  last attempt.

It reads and fails runs through the callbacks the services hand it (RunCallbacks): a failure goes
through Runs.transition, whose writes are conditional on the status read, so an event delivered
twice, or an event racing the runner's own report, changes the run once at most.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator

from chalicelib.compute.batch.calls import Calls
from chalicelib.compute.batch.dispatcher import BATCH_JOBS_PK, describe_jobs
from chalicelib.compute.batch.spec import run_of_job_name
from chalicelib.compute.dispatcher import RunCallbacks
from chalicelib.errors import NotFound
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.timestamps import iso, parse_iso
from chalicelib.store.table import Query
from nimbus.runtime.run_states import TERMINAL

logger = logging.getLogger(__name__)

EVENT_SOURCE = "aws.batch"
EVENT_TYPE = "Batch Job State Change"
HEARTBEAT_TIMEOUT_S = 600  # the runner beats every 60 s: ten missed beats mean it is gone
ENDED_GRACE_S = 300  # a job that ended this long ago without the runner reporting is taken as failed
VANISHED_GRACE_S = 60  # a job just submitted may not be listed yet
WAITING = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING"})  # no container of the job runs


def active_runs(ctx: Context, targets: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """(workspace, run_id) of the runs not yet ended on these (workspace, target) pairs, from the
    `ACTIVE#<ws>#<target>` partitions the submit transaction writes."""
    for workspace, target in targets:
        for item in ctx.table.query_all(Query(table_keys.active_runs_pk(workspace, target))):
            yield workspace, item["sk"]


def dispatched_runs(ctx: Context) -> Iterator[tuple[str, str]]:
    """(workspace, run_id) of every run handed to Batch and not yet swept as ended."""
    for item in ctx.table.query_all(Query(BATCH_JOBS_PK)):
        yield item["workspace"], item["sk"]


class Reconciler:
    def __init__(self, ctx: Context, runs: RunCallbacks, batch_client):
        self.ctx = ctx
        self.runs = runs
        self.call = Calls(batch_client)

    # --- events -----------------------------------------------------------------------------------
    def on_job_event(self, event) -> str:
        """Applies one "Batch Job State Change" event; returns what it did (for logs and tests). A
        malformed event or one of a job Nimbus did not submit is logged and ignored."""
        detail = _job_detail(event)
        if detail is None:
            logger.warning("ignored a malformed Batch job event: %.500r", event)
            return "ignored: malformed"
        found = self._run_of(detail)
        if found is None:
            return "ignored: not a Nimbus job"
        workspace, run = found
        if detail["status"] == "FAILED":
            return self._fail_for(workspace, run, detail)
        ends = _attempt_ends(detail) if detail["status"] in WAITING | {"RUNNING"} else {}
        if ends and run["status"] not in TERMINAL:
            if self.runs.note_attempt_ends(workspace, run["id"], ends):
                last = ends[max(ends)]
                logger.info("run %s: Batch attempt %d ended (%s); the job runs again", run["id"], max(ends),
                            last.get("end_reason"))
                return f"recorded: attempt {max(ends)} ended"
        return f"ignored: {detail['status']}"

    def _run_of(self, detail: dict) -> tuple[str, dict] | None:
        tags = detail.get("tags") if isinstance(detail.get("tags"), dict) else {}
        workspace, run_id = tags.get("nimbus:workspace"), tags.get("nimbus:run")
        if not (isinstance(workspace, str) and isinstance(run_id, str)):
            named = run_of_job_name(detail.get("jobName") or "")
            if named is None:
                return None
            workspace, run_id = named
        try:
            run = self.runs.get_run(workspace, run_id)
        except NotFound:
            return None
        recorded = (run.get("job") or {}).get("job_id")
        # A multi-node job's nodes report as "<job id>#<node>"; an event of another job of the same
        # name (an earlier submission) must not touch this run.
        if recorded and recorded != detail["jobId"].split("#")[0]:
            return None
        return workspace, run

    def _fail_for(self, workspace: str, run: dict, job: dict) -> str:
        if run["status"] in TERMINAL:
            return f"unchanged: the run is {run['status']}"
        reason = str(job.get("statusReason") or "no reason given")[:2000]
        exit_code = _exit_code(job)
        message = f"the Batch job failed: {reason}" + (f" (exit code {exit_code})" if exit_code is not None else "")
        error = {"message": message, "job_id": job["jobId"], "status_reason": reason, "exit_code": exit_code}
        if isinstance(job.get("attempts"), list) and job["attempts"]:
            error["attempts"] = len(job["attempts"])
        return self._end(workspace, run["id"], error)

    def _end(self, workspace: str, run_id: str, error: dict) -> str:
        if not self.runs.fail_run(workspace, run_id, error):
            return "unchanged: the run ended meanwhile"  # the runner's own report won: it stands
        logger.info("run %s failed: %s", run_id, error["message"])
        return "failed"

    # --- the sweep --------------------------------------------------------------------------------
    def sweep(self, now: float, runs: Iterable[tuple[str, str]] | None = None) -> dict[str, int]:
        """Checks the given runs (default: every run handed to Batch); returns counts of what it did."""
        explicit = runs is not None
        candidates: list[tuple[str, dict]] = []
        for workspace, run_id in (runs if explicit else dispatched_runs(self.ctx)):
            try:
                run = self.runs.get_run(workspace, run_id)
            except NotFound:
                run = None
            if run is None or run["status"] in TERMINAL:
                if not explicit:
                    self.ctx.table.delete(BATCH_JOBS_PK, run_id)  # done: leaves the sweep's list
                continue
            if (run.get("job") or {}).get("type") == "batch":
                candidates.append((workspace, run))
        jobs = describe_jobs(self.call, [run["job"]["job_id"] for _, run in candidates])
        counts = {"checked": len(candidates), "failed": 0}
        for workspace, run in candidates:
            problem = self._problem(now, run, jobs.get(run["job"]["job_id"]))
            if problem is None:
                continue
            stop_job = problem.pop("stop_job", False)
            if self._end(workspace, run["id"], problem) == "failed":
                counts["failed"] += 1
                if stop_job:  # a silent runner may still hold its instance: free it
                    self._stop(run["job"]["job_id"], problem["message"])
        return counts

    def _problem(self, now: float, run: dict, job: dict | None) -> dict | None:
        job_id = run["job"]["job_id"]
        if job is None:
            recorded = run.get("started") or run["created"]
            if now - parse_iso(recorded) < VANISHED_GRACE_S:
                return None
            return {"message": "the Batch job vanished: AWS Batch no longer knows it", "job_id": job_id}
        if job.get("status") == "FAILED":
            reason = job.get("statusReason") or "no reason given"
            return {"message": f"the Batch job failed: {reason}", "job_id": job_id, "status_reason": reason,
                    "exit_code": _exit_code(job)}
        if job.get("status") == "SUCCEEDED" and now - (job.get("stoppedAt") or 0) / 1000 > ENDED_GRACE_S:
            return {"message": "the Batch job ended without the runner reporting the run's outcome",
                    "job_id": job_id}
        if run["status"] == "Running" and job.get("status") not in WAITING:
            last = run.get("heartbeat") or run.get("started") or run["created"]
            silent_since = parse_iso(last)
            ends = _attempt_ends(job)
            if ends and ends[max(ends)]["ended"]:  # the runner of the attempt after it may not have beaten yet
                silent_since = max(silent_since, parse_iso(ends[max(ends)]["ended"]))
            if now - silent_since > HEARTBEAT_TIMEOUT_S:
                return {"message": f"the runner stopped sending heartbeats (last at {last})", "job_id": job_id,
                        "stop_job": True}
        return None

    def _stop(self, job_id: str, reason: str) -> None:
        try:
            self.call("terminate_job", "stopping the job", jobId=job_id, reason=reason[:250])
        except Exception as err:  # the run is already Failed; a job left running is only logged
            logger.warning("could not stop Batch job %s: %s", job_id, err)


def _job_detail(event) -> dict | None:
    """The event's `detail` when the event is a well-formed Batch job state change, else None."""
    if not isinstance(event, dict) or event.get("source") != EVENT_SOURCE or event.get("detail-type") != EVENT_TYPE:
        return None
    detail = event.get("detail")
    if not isinstance(detail, dict):
        return None
    if not all(isinstance(detail.get(name), str) and detail.get(name) for name in ("jobId", "status")):
        return None
    return detail


def _attempt_ends(job: dict) -> dict[int, dict]:
    """How the job's ended attempts ended, by attempt number (1-based): `ended` (ISO time), `end_reason`
    (Batch's statusReason) and `exit_code`, from `attempts` of an event's detail or of describe_jobs."""
    attempts = job.get("attempts") if isinstance(job.get("attempts"), list) else []
    ends: dict[int, dict] = {}
    for number, attempt in enumerate(attempts, start=1):
        if not isinstance(attempt, dict):
            continue
        reason = attempt.get("statusReason")
        container = attempt.get("container") if isinstance(attempt.get("container"), dict) else {}
        code = container.get("exitCode")
        ends[number] = {"ended": _iso_of_millis(attempt.get("stoppedAt")),
                        "end_reason": str(reason)[:1000] if isinstance(reason, str) and reason else None,
                        "exit_code": code if isinstance(code, int) and not isinstance(code, bool) else None}
    return ends


def _iso_of_millis(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 10**14:
        return None
    return iso(value / 1000)


def _exit_code(job: dict) -> int | None:
    """The container's exit code, from the job or its last attempt that has one (events vary in shape)."""
    def code_of(holder) -> int | None:
        container = holder.get("container") if isinstance(holder, dict) else None
        code = container.get("exitCode") if isinstance(container, dict) else None
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    attempts = job.get("attempts") if isinstance(job.get("attempts"), list) else []
    for holder in (job, *reversed(attempts)):
        if code_of(holder) is not None:
            return code_of(holder)
    return None
