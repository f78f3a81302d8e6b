"""The local compute target's start after a kill: runs whose launch was interrupted are neither lost
(left Queued with nothing to start them) nor left running unrecorded."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from chalicelib.compute.dispatcher import RunCallbacks
from chalicelib.local.local_compute import LAUNCH_INTERRUPTED, QUEUE_PK, LocalCompute
from chalicelib.store.sqlite_table import SqliteTable
from chalicelib.store.table import Query


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_run_whose_runner_started_unrecorded_is_failed_and_its_runner_killed(tmp_path):
    # Given a queued run whose launch was cut short: its runner started (it reported Preparing) but the
    # platform was killed before recording it, so no job.json exists and the queue item is still there
    table, jobs = SqliteTable(tmp_path / "t.db"), tmp_path / "jobs"
    folder = jobs / "run1"
    folder.mkdir(parents=True)
    table.put({"pk": QUEUE_PK, "sk": "run1", "entity": "queued_job", "workspace": "ws", "max_duration_s": None})
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], cwd=folder,
                              env={"NIMBUS_JOB_DIR": str(folder.resolve())}, start_new_session=True)
    failed = []
    callbacks = RunCallbacks(get_run=lambda ws, run_id: {"status": "Preparing", "submitted_by": "u"},
                             fail_run=lambda ws, run_id, error: failed.append((ws, run_id, error)) or True,
                             mint_run_token=lambda *a: "t", note_attempt_ends=lambda *a: True)
    compute = LocalCompute(callbacks, table, jobs, "http://127.0.0.1:9", tmp_path / "envs")
    try:
        time.sleep(0.2)
        # When the platform starts
        compute.start()

        # Then the unrecorded runner is killed, the run failed with the reason, and the queue item gone
        deadline = time.monotonic() + 10
        while not gone(runner.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(runner.pid)
        assert failed == [("ws", "run1", {"message": LAUNCH_INTERRUPTED})]
        assert list(table.query_all(Query(QUEUE_PK))) == []
    finally:
        compute.stop()
        runner.kill()
        runner.wait()
