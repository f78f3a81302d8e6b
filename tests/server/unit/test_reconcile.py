"""The reconciler: Batch job events and the sweep, on both table backends (Batch itself is moto's)."""
from __future__ import annotations

import time

import boto3
import pytest

from chalicelib.services.run_callbacks import run_callbacks
from chalicelib.services.container import Services
from chalicelib.compute.batch import dispatcher as batch
from chalicelib.compute.batch.dispatcher import BatchDispatcher
from chalicelib.compute.batch.provisioner import BatchProvisioner
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.timestamps import iso
from chalicelib.compute.batch.reconciliation import Reconciler, active_runs
from chalicelib.services.runs import Reporter
from chalicelib.store.factory import build_blobs, build_table
from chalicelib.store.table import Update
from nimbus.runtime.job_spec import JobSpec
from tests.server.unit.batch_helpers import make_account

JOB_ID = "5b2c0e1e-0000-4000-8000-000000000001"


class World:
    def __init__(self, services: Services):
        self.services = services
        self.batch = boto3.client("batch", region_name="us-east-1")
        token = services.identity.bootstrap_admin()
        self.admin = services.identity.authenticate(f"Bearer {token}")
        services.workspaces.create(self.admin, "team")
        self.stopped: list[dict] = []
        self.batch.terminate_job = lambda **kwargs: self.stopped.append(kwargs) or {}

    def reconciler(self) -> Reconciler:
        return Reconciler(self.services.ctx, run_callbacks(self.services.ctx), self.batch)

    def run_with_job(self, status="Running", job_id=JOB_ID, **extra) -> dict:
        run = self.services.runs.create(self.admin, "team", "mnist", status="Queued",
                                        submission={"snapshot_id": "s", "run_config": {"script": "t.py"}})
        if status != "Queued":
            self.services.runs.transition("team", run["id"], status)
        job = {"type": "batch", "job_id": job_id, "job_name": f"nimbus-team-{run['id']}", "job_queue": "q"}
        table = self.services.ctx.table
        table.update(Update(table_keys.run(run["id"]), set={"job": job, **extra}))
        entry = batch.batch_job_key(run["id"])
        table.put({"pk": entry.pk, "sk": entry.sk, "entity": "batch_job", "workspace": "team", "job_id": job_id})
        return self.services.runs.get("team", run["id"])

    def run(self, run_id: str) -> dict:
        return self.services.runs.get("team", run_id)


@pytest.fixture
def world(settings, request):
    request.getfixturevalue("aws_env")  # Batch is moto's on both backends
    return World(Services.over(Context(build_table(settings), build_blobs(settings), settings)))


def event(run: dict | None, status="FAILED", job_id=JOB_ID, tags=True, **detail) -> dict:
    body = {"jobId": job_id, "jobName": f"nimbus-team-{run['id']}" if run else "other-job", "status": status,
            "jobQueue": "q", "statusReason": "Essential container in task exited",
            "container": {"exitCode": 137}, **detail}
    if tags and run:
        body["tags"] = {"nimbus:workspace": "team", "nimbus:run": run["id"], "nimbus:experiment": "mnist"}
    return {"version": "0", "id": "e1", "detail-type": "Batch Job State Change", "source": "aws.batch",
            "account": "123456789012", "time": "2026-11-01T00:00:00Z", "region": "us-east-1",
            "resources": [f"arn:aws:batch:us-east-1:123456789012:job/{job_id}"], "detail": body}


# --- events -----------------------------------------------------------------------------------------


def test_a_failed_job_fails_the_run_with_batch_reason_and_exit_code(world):
    run = world.run_with_job("Running")
    assert world.reconciler().on_job_event(event(run)) == "failed"
    failed = world.run(run["id"])
    assert failed["status"] == "Failed" and failed["ended"]
    assert failed["error"]["message"] == "the Batch job failed: Essential container in task exited (exit code 137)"
    assert failed["error"]["exit_code"] == 137 and failed["error"]["job_id"] == JOB_ID


def test_the_same_event_twice_changes_nothing_the_second_time(world):
    run = world.run_with_job("Queued")
    reconciler = world.reconciler()
    reconciler.on_job_event(event(run, statusReason="CannotPullContainerError: image not found", container={}))
    first = world.run(run["id"])
    assert reconciler.on_job_event(event(run)) == "unchanged: the run is Failed"
    assert world.run(run["id"]) == first
    assert first["error"]["message"] == "the Batch job failed: CannotPullContainerError: image not found"


def test_the_runner_outcome_stands_against_a_later_failed_event(world):
    run = world.run_with_job("Running")
    world.services.runs.transition("team", run["id"], "Completed")
    assert world.reconciler().on_job_event(event(run)).startswith("unchanged")
    assert world.run(run["id"])["status"] == "Completed"


@pytest.mark.parametrize("status", ["SUBMITTED", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"])
def test_other_states_leave_the_run_to_its_runner_and_the_sweep(world, status):
    run = world.run_with_job("Running")
    assert world.reconciler().on_job_event(event(run, status=status)) == f"ignored: {status}"
    assert world.run(run["id"])["status"] == "Running"


def test_the_run_is_found_by_job_name_when_tags_are_missing_and_other_jobs_are_ignored(world):
    run = world.run_with_job("Running")
    reconciler = world.reconciler()
    assert reconciler.on_job_event(event(None)) == "ignored: not a Nimbus job"
    assert reconciler.on_job_event(event(run, job_id="another-job")) == "ignored: not a Nimbus job"
    assert world.run(run["id"])["status"] == "Running"
    # A multi-node job's node reports as "<job id>#<node index>"
    assert reconciler.on_job_event(event(run, job_id=JOB_ID + "#1", tags=False)) == "failed"


@pytest.mark.parametrize("broken", [
    None, "text", [], {}, {"source": "aws.batch", "detail-type": "Batch Job State Change"},
    {"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": "x"},
    {"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": {"jobId": 5, "status": "FAILED"}},
    {"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": {"jobId": "j"}},
    {"source": "aws.ec2", "detail-type": "Batch Job State Change", "detail": {"jobId": "j", "status": "FAILED"}},
])
def test_a_malformed_event_is_ignored_without_raising(world, broken):
    assert world.reconciler().on_job_event(broken) == "ignored: malformed"


def test_odd_but_valid_details_do_not_break_the_handler(world):
    run = world.run_with_job("Running")
    odd = event(run, tags={"nimbus:run": 7}, container="nope", attempts=[{"container": {"exitCode": 2}}])
    assert world.reconciler().on_job_event(odd) == "failed"
    assert world.run(run["id"])["error"]["exit_code"] == 2


# --- the sweep --------------------------------------------------------------------------------------


def test_a_job_batch_no_longer_knows_fails_its_run_and_leaves_the_list(world):
    run = world.run_with_job("Running", heartbeat=iso(time.time()))
    counts = world.reconciler().sweep(time.time() + 120)
    assert counts == {"checked": 1, "failed": 1}
    assert world.run(run["id"])["error"]["message"] == "the Batch job vanished: AWS Batch no longer knows it"
    world.reconciler().sweep(time.time() + 240)
    assert world.services.ctx.table.get_item(batch.batch_job_key(run["id"])) is None


def test_a_runner_without_heartbeats_fails_the_run_and_its_job_is_stopped(world):
    now = time.time()
    stale = world.run_with_job("Running", heartbeat=iso(now - 11 * 60))
    fresh = world.run_with_job("Running", job_id="job-2", heartbeat=iso(now - 60))
    queued = world.run_with_job("Queued", job_id="job-3")  # waiting for capacity beats nothing
    # moto's jobs are SUCCEEDED at once and never RUNNING: Batch's answer is the part faked here
    world.batch.describe_jobs = lambda jobs: {"jobs": [{"jobId": j, "status": "RUNNING"} for j in jobs]}
    assert world.reconciler().sweep(now) == {"checked": 3, "failed": 1}
    failed = world.run(stale["id"])
    assert failed["status"] == "Failed" and failed["error"]["message"].startswith("the runner stopped sending heartbeats")
    assert "stop_job" not in failed["error"]
    assert world.stopped == [{"jobId": JOB_ID, "reason": failed["error"]["message"]}]
    assert world.run(fresh["id"])["status"] == "Running" and world.run(queued["id"])["status"] == "Queued"


def test_an_explicit_list_of_runs_is_swept_as_given(world):
    swept = world.run_with_job("Running", heartbeat=iso(time.time()))
    other = world.run_with_job("Running", job_id="job-2", heartbeat=iso(time.time()))
    world.reconciler().sweep(time.time() + 120, runs=[("team", swept["id"])])
    assert world.run(swept["id"])["status"] == "Failed" and world.run(other["id"])["status"] == "Running"


def test_active_runs_reads_the_active_partitions_of_targets(world):
    table = world.services.ctx.table
    for run_id in ("r1", "r2"):
        key = table_keys.active_run("team", "gpu", run_id)
        table.put({"pk": key.pk, "sk": key.sk, "entity": "active_run"})
    assert sorted(active_runs(world.services.ctx, [("team", "gpu"), ("team", "cpu")])) == [("team", "r1"),
                                                                                         ("team", "r2")]


def test_a_job_that_ended_without_its_runner_reporting_fails_the_run(aws_env):
    # A real submission into moto, whose jobs go SUCCEEDED at once without running anything
    account = make_account()
    settings = account.network()
    resources = BatchProvisioner(account.settings, account.batch, poll_seconds=0).create("team", "gpu", settings)
    target = {"name": "gpu", "type": "batch", "settings": settings, "resources": resources}
    run = account.queued_run(target)
    BatchDispatcher(account.services.ctx, run_callbacks(account.services.ctx), account.settings, account.batch).submit(JobSpec(run["id"], "team", 60, "gpu",
                                                                                      target))
    reconciler = Reconciler(account.services.ctx, run_callbacks(account.services.ctx), account.batch)
    assert reconciler.sweep(time.time()) == {"checked": 1, "failed": 0}  # within the grace period
    assert reconciler.sweep(time.time() + 600) == {"checked": 1, "failed": 1}
    assert account.services.runs.get("team", run["id"])["error"]["message"] == (
        "the Batch job ended without the runner reporting the run's outcome")


# --- retried attempts -------------------------------------------------------------------------------

HOST_GONE = "Host EC2 (instance i-0abc) terminated."
ENDED_AT_MS = 1_793_500_000_000


def ended_attempt(stopped_ms: int = ENDED_AT_MS, reason: str = HOST_GONE, exit_code: int | None = None) -> dict:
    """An entry of a job detail's `attempts`, as Batch describes an attempt that ended."""
    container = {"containerInstanceArn": "arn:aws:ecs:us-east-1:123456789012:container-instance/c1",
                 "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/t1", "logStreamName": "nimbus/default/t1",
                 "networkInterfaces": []}
    if exit_code is not None:
        container["exitCode"] = exit_code
    return {"container": container, "startedAt": stopped_ms - 60_000, "stoppedAt": stopped_ms, "statusReason": reason}


def held_run(world, attempt: int = 1, runner_id: str = "runner-aaaaaaaa") -> dict:
    run = world.run_with_job("Queued")
    world.services.runs.transition("team", run["id"], "Preparing", reporter=Reporter(runner_id, attempt))
    world.services.runs.transition("team", run["id"], "Running", reporter=Reporter(runner_id, attempt))
    return world.run(run["id"])


@pytest.mark.parametrize("status", ["RUNNABLE", "STARTING", "RUNNING"])
def test_a_job_run_again_after_its_host_went_away_keeps_the_run_and_records_why(world, status):
    # Given a run whose attempt 1 holds it
    run = held_run(world)

    # When Batch runs the job again after the host of attempt 1 went away
    again = event(run, status=status, statusReason=None, container={}, attempts=[ended_attempt()])
    assert world.reconciler().on_job_event(again) == "recorded: attempt 1 ended"

    # Then the run goes on, with the end of attempt 1 in its attempts; the same event again changes nothing
    kept = world.run(run["id"])
    assert kept["status"] == "Running" and kept["error"] is None
    assert kept["attempts"] == [{"attempt": 1, "runner_id": "runner-aaaaaaaa", "started": run["attempts"][0]["started"],
                                 "ended": iso(ENDED_AT_MS / 1000), "end_reason": HOST_GONE}]
    assert world.reconciler().on_job_event(again) == f"ignored: {status}"
    assert world.run(run["id"]) == kept

    # and attempt 2's runner restarts the run, its entry beside attempt 1's
    restarted = world.services.runs.transition("team", run["id"], "Preparing",
                                               reporter=Reporter("runner-bbbbbbbb", 2))
    assert restarted["status"] == "Preparing" and restarted["attempt"] == 2
    assert [a.get("end_reason") for a in restarted["attempts"]] == [HOST_GONE, None]


def test_an_attempt_recorded_by_its_runner_after_the_event_keeps_the_end_of_the_earlier_one(world):
    # Attempt 1 ended before its runner reported anything; the event arrives before attempt 2's runner does
    run = world.run_with_job("Queued")
    event_first = event(run, status="RUNNABLE", attempts=[ended_attempt(exit_code=137)])
    assert world.reconciler().on_job_event(event_first) == "recorded: attempt 1 ended"
    assert world.run(run["id"])["status"] == "Queued"

    world.services.runs.transition("team", run["id"], "Preparing", reporter=Reporter("runner-bbbbbbbb", 2))
    attempts = world.run(run["id"])["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["exit_code"] == 137 and attempts[0]["end_reason"] == HOST_GONE
    assert attempts[1]["runner_id"] == "runner-bbbbbbbb" and "end_reason" not in attempts[1]


def test_a_failed_job_after_its_last_attempt_fails_the_run_with_batch_reason(world):
    run = held_run(world)
    reconciler = world.reconciler()
    reconciler.on_job_event(event(run, status="RUNNABLE", attempts=[ended_attempt()]))
    world.services.runs.transition("team", run["id"], "Preparing", reporter=Reporter("runner-bbbbbbbb", 2))

    last = event(run, statusReason=HOST_GONE, container={},
                 attempts=[ended_attempt(), ended_attempt(ENDED_AT_MS + 600_000)])
    assert reconciler.on_job_event(last) == "failed"
    failed = world.run(run["id"])
    assert failed["status"] == "Failed" and failed["error"]["message"] == f"the Batch job failed: {HOST_GONE}"
    assert failed["error"]["attempts"] == 2
    assert reconciler.on_job_event(event(run, status="RUNNABLE", attempts=[ended_attempt()])) == "ignored: RUNNABLE"


def test_the_sweep_waits_for_the_next_attempt_instead_of_failing_a_silent_run(world):
    # Given runs whose runner went silent 11 minutes ago, when their attempt's host went away
    now = time.time()
    silent = iso(now - 11 * 60)
    waiting = world.run_with_job("Running", heartbeat=silent)
    starting = world.run_with_job("Running", job_id="job-2", heartbeat=silent)
    lately = world.run_with_job("Running", job_id="job-3", heartbeat=silent)
    long_ago = world.run_with_job("Running", job_id="job-4", heartbeat=silent)
    ended = {JOB_ID: ("RUNNABLE", now - 11 * 60), "job-2": ("STARTING", now - 11 * 60),
             "job-3": ("RUNNING", now - 60), "job-4": ("RUNNING", now - 11 * 60)}
    world.batch.describe_jobs = lambda jobs: {"jobs": [
        {"jobId": j, "status": ended[j][0], "attempts": [ended_attempt(int(ended[j][1] * 1000))]} for j in jobs]}

    # When the sweep looks: Batch is waiting for, or just started, the next attempt of the first three
    assert world.reconciler().sweep(now) == {"checked": 4, "failed": 1}

    # Then only the run whose next attempt has been running silently for 11 minutes failed
    assert [world.run(r["id"])["status"] for r in (waiting, starting, lately)] == ["Running"] * 3
    assert world.run(long_ago["id"])["error"]["message"].startswith("the runner stopped sending heartbeats")
    assert world.stopped == [{"jobId": "job-4", "reason": world.run(long_ago["id"])["error"]["message"]}]
