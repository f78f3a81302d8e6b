"""LocalWorker with real processes: tiny scripts stand in for the runner through the injectable command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from nimbus.runtime.job_spec import JobSpec, runner_command
from nimbus.runtime.local_worker import DIED, ENDED_UNSEEN, JOB_FILE, LocalWorker

# Each job's script writes `started` in its folder, then waits for `release` there (or a timeout).
WAIT_FOR_RELEASE = """
import os, pathlib, sys, time
pathlib.Path("started").write_text(str(os.getpid()))
deadline = time.time() + 30
while not pathlib.Path("release").exists() and time.time() < deadline:
    time.sleep(0.02)
pathlib.Path("ended").touch()
"""

DUMP_ENV = """
import json, os, pathlib, time
keys = ["NIMBUS_URL", "NIMBUS_RUN_TOKEN", "NIMBUS_WORKSPACE", "NIMBUS_RUN_ID", "NIMBUS_JOB_DIR", "NIMBUS_TOKEN"]
pathlib.Path("env.json").write_text(json.dumps({"cwd": os.getcwd(), **{k: os.environ.get(k) for k in keys}}))
deadline = time.time() + 30
while not pathlib.Path("release").exists() and time.time() < deadline:
    time.sleep(0.02)
"""

# Two `sleep 60` children: one stays in the job's group, one leaves it (its own session).
SPAWN_AND_SLEEP = """
import json, pathlib, signal, subprocess, sys, time
if "ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited: only SIGKILL ends this tree
stay = subprocess.Popen(["sleep", "60"])
leave = subprocess.Popen(["sleep", "60"], start_new_session=True)
pathlib.Path("children.json").write_text(json.dumps([stay.pid, leave.pid]))
time.sleep(60)
"""


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out waiting for the condition")


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie its (new) parent has not reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Harness:
    def __init__(self, tmp_path: Path):
        self.jobs_dir = tmp_path / "jobs"
        self.statuses: dict[str, str] = {}
        self.died: list[tuple[str, str, str]] = []
        self.on_died_hook = None
        self.minted: list[str] = []
        self.scripts: dict[str, tuple[str, ...]] = {}  # run_id -> script and its arguments
        self.workers: list[LocalWorker] = []

    def worker(self, **options) -> LocalWorker:
        options = {"concurrency": 2, "poll_seconds": 0.02, "kill_grace_s": 0.3, **options}
        worker = LocalWorker(self.jobs_dir, "http://127.0.0.1:9", self.mint, self.on_died, self.run_status,
                             command=self.command, **options)
        self.workers.append(worker)
        return worker

    def mint(self, spec: JobSpec) -> str:
        self.minted.append(spec.run_id)
        return f"nmb_run_{spec.run_id}"

    def on_died(self, run_id: str, workspace: str, reason: str) -> None:
        self.died.append((run_id, workspace, reason))
        if self.on_died_hook:
            self.on_died_hook()

    def run_status(self, run_id: str, workspace: str) -> str:
        return self.statuses.get(run_id, "Running")

    def command(self, spec: JobSpec) -> list[str]:
        script, *arguments = self.scripts[spec.run_id]
        if script is None:
            return [str(self.jobs_dir / "no-such-program")]
        return [sys.executable, "-c", script, *arguments]

    def submit(self, worker: LocalWorker, run_id: str, script: str | None, *arguments: str, max_duration_s=None) -> Path:
        self.scripts[run_id] = (script, *arguments)
        worker.submit(JobSpec(run_id, "ws1", max_duration_s))
        return self.jobs_dir / run_id

    def finished(self, run_id: str) -> bool:
        """Every worker is done with the job (it started, ended and was dealt with)."""
        return run_id in self.minted and all(run_id not in w.active_jobs() for w in self.workers)


@pytest.fixture
def harness(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    for worker in harness.workers:
        worker.stop()
    for record in harness.jobs_dir.glob(f"*/{JOB_FILE}"):  # a failed test must not leave processes behind
        try:
            os.killpg(json.loads(record.read_text())["pgid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def test_runner_command():
    assert runner_command("/usr/bin/python3") == ["/usr/bin/python3", "-m", "nimbus.runtime.runner"]


def test_concurrency_limit_and_fifo_order(harness):
    worker = harness.worker(concurrency=2)
    folders = [harness.submit(worker, f"run{i}", WAIT_FOR_RELEASE) for i in range(3)]
    wait_for(lambda: all((f / "started").exists() for f in folders[:2]))
    time.sleep(0.2)  # ten supervisor polls: the third would have started by now
    assert not (folders[2] / "started").exists()
    (folders[0] / "release").touch()
    wait_for(lambda: (folders[2] / "started").exists())
    assert (folders[0] / "ended").exists() and not (folders[1] / "ended").exists()
    for folder in folders[1:]:
        (folder / "release").touch()
    wait_for(lambda: all(harness.finished(f"run{i}") for i in range(3)))
    assert harness.minted == ["run0", "run1", "run2"]
    assert harness.died == []  # exit code 0: the runner reports its own status


def test_environment_working_folder_and_job_record(harness, monkeypatch):
    monkeypatch.setenv("NIMBUS_TOKEN", "nmb_platform_admin_token")
    worker = harness.worker()
    folder = harness.submit(worker, "envrun", DUMP_ENV)
    env = json.loads(wait_for(lambda: (folder / "env.json").exists() and (folder / "env.json").read_text()))
    assert env == {"cwd": str(folder.resolve()), "NIMBUS_URL": "http://127.0.0.1:9", "NIMBUS_RUN_TOKEN": "nmb_run_envrun",
                   "NIMBUS_WORKSPACE": "ws1", "NIMBUS_RUN_ID": "envrun", "NIMBUS_JOB_DIR": str(folder.resolve()),
                   "NIMBUS_TOKEN": None}
    record_text = (folder / JOB_FILE).read_text()
    assert "nmb_run_envrun" not in record_text
    record = json.loads(record_text)
    process = psutil.Process(record["pid"])
    assert record["pgid"] == record["pid"] == os.getpgid(record["pid"]) != os.getpgid(0)  # a group of its own
    assert record["create_time"] == process.create_time() and record["workspace"] == "ws1"
    assert oct((folder / JOB_FILE).stat().st_mode & 0o777) == "0o600"
    (folder / "release").touch()
    wait_for(lambda: harness.finished("envrun"))


def test_runner_output_goes_to_runner_log(harness):
    worker = harness.worker()
    harness.submit(worker, "logrun", "import sys; print('to stdout'); print('to stderr', file=sys.stderr)")
    wait_for(lambda: harness.finished("logrun"))
    assert sorted((harness.jobs_dir / "logrun" / "runner.log").read_text().splitlines()) == ["to stderr", "to stdout"]


def test_max_duration_kills_the_whole_tree_and_reports(harness):
    worker = harness.worker()
    folder = harness.submit(worker, "slow", SPAWN_AND_SLEEP, "ignore-term", max_duration_s=1)
    children = json.loads(wait_for(lambda: (folder / "children.json").exists() and (folder / "children.json").read_text()))
    root = json.loads((folder / JOB_FILE).read_text())["pid"]
    wait_for(lambda: harness.died, timeout=4)
    assert harness.died == [("slow", "ws1", "exceeded its max run duration of 1 s")]
    wait_for(lambda: all(gone(pid) for pid in [root, *children]), timeout=3)  # SIGTERM ignored: SIGKILL after the grace
    wait_for(lambda: harness.finished("slow"))
    assert len(harness.died) == 1


def test_cancel_kills_the_tree_without_reporting(harness):
    worker = harness.worker()
    folder = harness.submit(worker, "victim", SPAWN_AND_SLEEP)
    children = json.loads(wait_for(lambda: (folder / "children.json").exists() and (folder / "children.json").read_text()))
    root = json.loads((folder / JOB_FILE).read_text())["pid"]
    assert worker.cancel("victim") is True
    wait_for(lambda: all(gone(pid) for pid in [root, *children]), timeout=2)
    wait_for(lambda: harness.finished("victim"))
    assert harness.died == []
    assert worker.cancel("victim") is False  # no longer known
    assert worker.cancel("never-submitted") is False


def test_cancel_a_queued_job(harness):
    worker = harness.worker(concurrency=1)
    first = harness.submit(worker, "first", WAIT_FOR_RELEASE)
    harness.submit(worker, "second", WAIT_FOR_RELEASE)
    wait_for(lambda: (first / "started").exists())
    assert worker.cancel("second") is True
    (first / "release").touch()
    wait_for(lambda: harness.finished("first"))
    time.sleep(0.1)
    assert not (harness.jobs_dir / "second").exists() and harness.minted == ["first"]
    assert harness.died == []


def test_nonzero_exit_without_a_final_status_is_reported(harness):
    worker = harness.worker()
    harness.submit(worker, "crash", "import sys; sys.exit(3)")
    wait_for(lambda: harness.died)
    assert harness.died == [("crash", "ws1", "the runner exited with code 3")]


def test_nonzero_exit_after_a_final_status_is_not_reported(harness):
    harness.statuses["failedrun"] = "Failed"
    worker = harness.worker()
    harness.submit(worker, "failedrun", "import sys; sys.exit(1)")
    wait_for(lambda: harness.finished("failedrun"))
    assert harness.died == []


def test_killed_runner_is_reported_with_its_signal(harness):
    worker = harness.worker()
    harness.submit(worker, "killed", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    wait_for(lambda: harness.died)
    assert harness.died == [("killed", "ws1", "the runner was killed by signal SIGKILL")]


def test_a_runner_that_cannot_start_is_reported(harness):
    worker = harness.worker()
    harness.submit(worker, "nostart", None)  # a program that does not exist: Popen fails
    wait_for(lambda: harness.died)
    assert harness.died[0][:2] == ("nostart", "ws1") and harness.died[0][2].startswith("its runner could not start")


def test_submit_refuses_a_run_id_that_is_not_a_folder_name(harness):
    with pytest.raises(ValueError):
        harness.worker().submit(JobSpec("../escape", "ws1", None))


def write_record(jobs_dir: Path, run_id: str, pid: int, create_time: float, started: float | None = None,
                 max_duration_s: int | None = None) -> Path:
    folder = jobs_dir / run_id
    folder.mkdir(parents=True)
    (folder / JOB_FILE).write_text(json.dumps({
        "run_id": run_id, "workspace": "ws1", "max_duration_s": max_duration_s, "pid": pid, "pgid": pid,
        "started": started or time.time(), "create_time": create_time}))
    return folder / JOB_FILE


def test_recover_reports_dead_jobs_unless_their_run_ended(harness):
    reaped = subprocess.Popen(["true"])
    reaped.wait()  # a pid no process has now
    write_record(harness.jobs_dir, "nopid", reaped.pid, 1.0)
    write_record(harness.jobs_dir, "reused", os.getpid(), 1.0)  # a live pid, but not the job's process
    finished = write_record(harness.jobs_dir, "done", reaped.pid, 1.0)
    harness.statuses["done"] = "Completed"
    worker = harness.worker()
    worker.recover()
    assert sorted(harness.died) == [("nopid", "ws1", DIED), ("reused", "ws1", DIED)]
    assert not finished.exists() and not list(harness.jobs_dir.glob(f"*/{JOB_FILE}"))
    assert worker.cancel("reused") is False  # not adopted


def test_recover_adopts_a_live_job_and_reports_when_it_dies(harness):
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        record = write_record(harness.jobs_dir, "survivor", process.pid, psutil.Process(process.pid).create_time())
        worker = harness.worker()
        worker.recover()
        time.sleep(0.1)
        assert harness.died == [] and record.exists()
        process.kill()
        wait_for(lambda: harness.died)
        assert harness.died == [("survivor", "ws1", ENDED_UNSEEN)]
        assert not record.exists()
    finally:
        process.kill()
        process.wait()


def test_an_adopted_job_keeps_its_deadline_and_can_be_canceled(harness):
    overdue = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        write_record(harness.jobs_dir, "overdue", overdue.pid, psutil.Process(overdue.pid).create_time(),
                     started=time.time() - 100, max_duration_s=10)
        write_record(harness.jobs_dir, "other", other.pid, psutil.Process(other.pid).create_time())
        worker = harness.worker()
        worker.recover()
        assert worker.cancel("other") is True
        wait_for(lambda: overdue.poll() is not None and other.poll() is not None)
        wait_for(lambda: harness.died)
        assert harness.died == [("overdue", "ws1", "exceeded its max run duration of 10 s")]
    finally:
        for process in (overdue, other):
            process.kill()
            process.wait()


def test_stop_leaves_jobs_running(harness):
    worker = harness.worker()
    folder = harness.submit(worker, "keeps", WAIT_FOR_RELEASE)
    wait_for(lambda: (folder / "started").exists())
    worker.stop()
    pid = json.loads((folder / JOB_FILE).read_text())["pid"]
    assert not gone(pid)
    (folder / "release").touch()
    wait_for(lambda: gone(pid))


def test_callbacks_run_without_the_lock(harness):
    """on_died may call back into the worker (e.g. the platform cancels other work) without a deadlock."""
    worker = harness.worker()
    calls = threading.Event()
    harness.on_died_hook = lambda: (worker.submit(JobSpec("late", "ws1", None)), worker.cancel("late"), calls.set())
    harness.submit(worker, "crash2", "import sys; sys.exit(2)")
    assert calls.wait(5)


def test_recover_ends_what_a_dead_runner_left_running_outside_its_group(harness):
    # Given a job whose runner started a child in a session of its own (as the runner starts the script),
    # then the platform went away (no supervision) and the runner was killed outright
    worker = harness.worker()
    folder = harness.submit(worker, "orphaned", SPAWN_AND_SLEEP)
    stay, leave = wait_for(lambda: (folder / "children.json").exists() and json.loads((folder / "children.json").read_text()))
    worker.stop()
    runner = json.loads((folder / JOB_FILE).read_text())["pid"]
    os.killpg(runner, signal.SIGKILL)
    wait_for(lambda: gone(runner))
    assert not gone(leave)

    # When the next start recovers
    harness.worker().recover()

    # Then the run is reported and nothing of the job runs unsupervised
    assert harness.died == [("orphaned", "ws1", DIED)]
    wait_for(lambda: gone(leave) and gone(stay))


def test_a_supervised_runner_killed_outright_leaves_nothing_running(harness):
    worker = harness.worker()
    folder = harness.submit(worker, "outright", SPAWN_AND_SLEEP)
    stay, leave = wait_for(lambda: (folder / "children.json").exists() and json.loads((folder / "children.json").read_text()))
    os.kill(json.loads((folder / JOB_FILE).read_text())["pid"], signal.SIGKILL)  # the runner alone
    wait_for(lambda: harness.died)
    assert harness.died == [("outright", "ws1", "the runner was killed by signal SIGKILL")]
    wait_for(lambda: gone(leave) and gone(stay))
