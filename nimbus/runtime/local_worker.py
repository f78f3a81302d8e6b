"""The local worker: runs each job as a process on this machine, for the local platform and instance agents.

Every job gets its own working folder (`jobs_dir/<run_id>/`) and its own session, so its whole process
tree can be signalled as one group and it outlives a platform restart. `job.json` in that folder records
the process while it runs, so the next start can adopt live jobs and report dead ones. The runner
reports the run's statuses itself; the worker only reports what the runner cannot: it was killed for
exceeding its max duration, it crashed, or it died unseen.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import psutil

from nimbus.home import nimbus_home
from nimbus.runtime import run_isolation
from nimbus.runtime.environment_build import envs_dir
from nimbus.runtime.job_spec import JobSpec, runner_command
from nimbus.runtime.private_files import write_private
from nimbus.runtime.run_states import TERMINAL

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
RUNNER_LOG = "runner.log"
DIED = "its runner died (the platform was restarted or the process was killed)"
ENDED_UNSEEN = "its runner ended without reporting a final status (its exit code is unknown after a platform restart)"
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # it names a folder: no dots, no separators
_SAME_START_S = 0.05  # create_time tolerance when telling a job's process from a reused pid


@dataclass
class _Job:
    run_id: str
    workspace: str
    max_duration_s: int | None
    started: float = 0.0  # wall clock, so the deadline survives a restart
    process: psutil.Process | None = None  # None while the job is being launched
    popen: subprocess.Popen | None = None  # None for a job adopted after a restart: no exit code then
    pgid: int = 0
    uid: int | None = None  # the run's own uid (run_isolation's uid mechanism)
    stopping: str | None = None  # "canceled" or "timed out": its tree is being killed, nothing more to report
    kill_at: float | None = None  # when SIGKILL follows the SIGTERM
    doomed: dict[int, psutil.Process] = field(default_factory=dict)  # members seen when the kill began


class LocalWorker:
    def __init__(self, jobs_dir: Path, api_url: str, mint_token: Callable[[JobSpec], str],
                 on_died: Callable[[str, str, str], None], run_status: Callable[[str, str], str], *,
                 concurrency: int = 2, python: str = sys.executable, poll_seconds: float = 0.5,
                 kill_grace_s: float = 5.0, command: Callable[[JobSpec], list[str]] | None = None,
                 job_env: dict[str, str] | None = None, on_launched: Callable[[JobSpec], None] | None = None,
                 protected: Iterable[Path] = (), isolation: run_isolation.Isolation | None = None):
        """`mint_token(spec)` is called at launch and its token only passed in the environment; `on_died(run_id,
        workspace, reason)` marks the run Failed; `run_status(run_id, workspace)` tells whether the runner
        reached a final status before it exited. Callbacks run without the worker's lock held. `job_env` is added
        to every runner's environment (e.g. NIMBUS_ENVS_DIR, where runs' environments are built). `on_launched(spec)`
        is called once the job's process is recorded in its folder (from then on a restart adopts it).
        `protected`: the folders of the platform's state (its home, the agent's profile) runs' scripts must not
        reach, besides $NIMBUS_HOME and `jobs_dir`; `isolation`: how they are kept from them, decided here by
        default (nimbus/runtime/run_isolation.py)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.jobs_dir = Path(jobs_dir)
        self.api_url = api_url
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.kill_grace_s = kill_grace_s
        self._mint_token, self._on_died, self._run_status = mint_token, on_died, run_status
        self._on_launched = on_launched
        self._command = command or (lambda spec: runner_command(python))
        self._job_env = dict(job_env or {})
        self._protected = list(dict.fromkeys(Path(p).absolute() for p in [nimbus_home(), *protected]))
        self._opened = [self.jobs_dir.absolute(), envs_dir({**os.environ, **self._job_env}).absolute()]
        self.isolation = isolation or run_isolation.decide(python, [*self._protected, self.jobs_dir], self._opened,
                                                           shared=self._opened[1:])
        self._lock = threading.Lock()
        self._queue: collections.deque[JobSpec] = collections.deque()
        self._running: dict[str, _Job] = {}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="nimbus-local-worker", daemon=True)
        self._thread.start()

    # --- the port -------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> None:
        if not _RUN_ID.fullmatch(spec.run_id):
            raise ValueError(f"run id {spec.run_id!r} cannot name a job folder")
        with self._lock:
            if spec.run_id in self._running or any(q.run_id == spec.run_id for q in self._queue):
                return  # a retried submission: the job is already here
            self._queue.append(spec)
        self._wake.set()

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            for queued in self._queue:
                if queued.run_id == run_id:
                    self._queue.remove(queued)
                    return True
            job = self._running.get(run_id)
            if job is None:
                return False
            if job.stopping is None:
                job.stopping = "canceled"
                if job.process is not None:  # else the launch sees the flag and kills it
                    self._begin_kill(job)
            return True

    def active_jobs(self) -> dict[str, str]:
        """run id -> "queued" or "running", for status displays and tests."""
        with self._lock:
            return {**{q.run_id: "queued" for q in self._queue}, **{r: "running" for r in self._running}}

    # --- lifecycle ------------------------------------------------------------------------------
    def recover(self) -> None:
        """At platform start: adopt the jobs whose process still runs, report the others (unless their run ended)."""
        dead: list[tuple[_Job, Path]] = []
        for path in sorted(self.jobs_dir.glob(f"*/{JOB_FILE}")):
            try:
                record = json.loads(path.read_text())
                job = _Job(record["run_id"], record["workspace"], record.get("max_duration_s"),
                           started=float(record["started"]), pgid=int(record["pgid"]), uid=record.get("uid"))
                pid, create_time = int(record["pid"]), float(record["create_time"])
                if job.run_id != path.parent.name:
                    raise ValueError(f"it names run {job.run_id!r}")
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("ignoring unreadable job record %s: %s", path, error)
                continue
            with self._lock:
                if job.run_id in self._running:
                    continue
                job.process = _live_process(pid, create_time)
                if job.process is not None:
                    self._running[job.run_id] = job
                    continue
            dead.append((job, path))
        for job, path in dead:
            _kill_leftovers(self._folder(job.run_id))  # its script outlives a killed runner: it must not run on unseen
            if not self._is_terminal(job):
                self._report(job, DIED)
            path.unlink(missing_ok=True)
        if self.isolation.mechanism == "uid":  # folders of ended runs, older ones included, are the platform's only
            with self._lock:
                live = set(self._running)
            for folder in self.jobs_dir.iterdir() if self.jobs_dir.is_dir() else ():
                if folder.is_dir() and folder.name not in live:
                    run_isolation.close_job_folder(folder)
        self._wake.set()

    def end_unrecorded(self, run_id: str) -> int:
        """Kills what runs of a job this worker does not supervise: a runner started just before the platform
        stopped, before its process was recorded. Returns how many processes were killed."""
        with self._lock:
            if run_id in self._running:
                raise ValueError(f"run {run_id} is supervised here")
        return _kill_leftovers(self._folder(run_id))

    def stop(self) -> None:
        """Stop supervising; the jobs keep running, and the next start's recover() adopts them."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    # --- the supervisor -------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the tick: a wake-up during it is not lost
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - one bad tick must not end supervision
                log.exception("local worker: supervision failed; retrying")
            self._wake.wait(self.poll_seconds)

    def _tick(self) -> None:
        timed_out, ended = [], []
        with self._lock:
            now = time.time()
            for job in list(self._running.values()):
                if job.process is None:
                    continue
                if job.stopping is None and job.max_duration_s is not None and now - job.started >= job.max_duration_s:
                    job.stopping = "timed out"
                    timed_out.append(job)
                elif job.kill_at is not None and now >= job.kill_at:
                    self._signal_tree(job, signal.SIGKILL)
                    job.kill_at = now + self.kill_grace_s
                if _has_exited(job):
                    ended.append(job)
        for job in timed_out:  # reported first, so the runner's own report on SIGTERM does not win
            self._report(job, f"exceeded its max run duration of {job.max_duration_s} s")
            with self._lock:
                self._begin_kill(job)
        for job in ended:
            self._finish(job)
        self._start_queued()

    def _start_queued(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if not self._queue or len(self._running) >= self.concurrency:
                    return
                spec = self._queue.popleft()
                job = self._running[spec.run_id] = _Job(spec.run_id, spec.workspace, spec.max_duration_s)
            try:
                self._launch(spec, job)
            except Exception as error:  # noqa: BLE001 - the run must not stay Queued forever
                log.exception("local worker: could not start run %s", spec.run_id)
                with self._lock:
                    self._running.pop(spec.run_id, None)
                if job.stopping is None:
                    self._report(job, f"its runner could not start: {error}")

    def _folder(self, run_id: str) -> Path:
        return (self.jobs_dir / run_id).resolve()

    def _launch(self, spec: JobSpec, job: _Job) -> None:
        folder = self._folder(spec.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "NIMBUS_TOKEN"}  # the platform's own credentials stay here
        env.update(self._job_env)
        env.update(NIMBUS_URL=self.api_url, NIMBUS_RUN_TOKEN=self._mint_token(spec), NIMBUS_WORKSPACE=spec.workspace,
                   NIMBUS_RUN_ID=spec.run_id, NIMBUS_JOB_DIR=str(folder))
        with self._lock:
            taken = [other.uid for other in self._running.values() if other.uid is not None]
        confinement = run_isolation.confinement_for(self.isolation, taken)
        if confinement is not None:
            env[run_isolation.ENV] = confinement.to_env()  # the runner confines the script (run_isolation.py)
            job.uid = confinement.uid
        if job.uid is not None:
            run_isolation.open_for_runs(self._protected, self._opened)
            os.chmod(folder, 0o711)  # the run's uid passes through to its own folders only
        runner_log_fd = os.open(folder / RUNNER_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(runner_log_fd, "ab") as runner_log:
            popen = subprocess.Popen(self._command(spec), cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                     stdout=runner_log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process, started = psutil.Process(popen.pid), time.time()
            write_private(folder / JOB_FILE, {
                "run_id": spec.run_id, "workspace": spec.workspace, "max_duration_s": spec.max_duration_s,
                "pid": popen.pid, "pgid": popen.pid, "started": started, "create_time": process.create_time(),
                "uid": job.uid})
        except BaseException:  # an unrecorded job could never be supervised again: do not leave it running
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        with self._lock:
            job.popen, job.process, job.pgid, job.started = popen, process, popen.pid, started
            if job.stopping == "canceled":  # canceled while launching
                self._begin_kill(job)
        if self._on_launched is not None:
            try:
                self._on_launched(spec)
            except Exception:  # noqa: BLE001 - the job runs and is recorded: supervising it matters more
                log.exception("local worker: on_launched failed for run %s", spec.run_id)

    def _finish(self, job: _Job) -> None:
        """The job leaves the running set only once it is fully dealt with, so active_jobs() never lies."""
        with self._lock:
            self._signal_tree(job, signal.SIGKILL)  # leftovers of the group, while the unreaped leader pins its id
            if job.popen is not None:
                job.popen.wait()
        _kill_leftovers(self._folder(job.run_id))  # a runner that died unseen left its script's group behind
        (self.jobs_dir / job.run_id / JOB_FILE).unlink(missing_ok=True)
        if job.uid is not None:
            run_isolation.close_job_folder(self.jobs_dir / job.run_id)
        reason = None  # canceled (the API said so) or timed out (already reported): nothing to add
        if job.stopping is None and job.popen is None:
            reason = ENDED_UNSEEN
        elif job.stopping is None and job.popen.returncode != 0:  # 0: the runner reported its own status
            reason = _exit_reason(job.popen.returncode)
        if reason is not None and not self._is_terminal(job):
            self._report(job, reason)
        with self._lock:
            self._running.pop(job.run_id, None)

    # --- killing a tree (called with the lock held) ---------------------------------------------
    def _begin_kill(self, job: _Job) -> None:
        self._signal_tree(job, signal.SIGTERM)
        job.kill_at = time.time() + self.kill_grace_s

    def _signal_tree(self, job: _Job, sig: int) -> None:
        """The group, plus descendants that left it (collected now and at earlier signals)."""
        if job.process is None:
            return
        job.doomed.setdefault(job.process.pid, job.process)
        try:
            for child in job.process.children(recursive=True):
                job.doomed.setdefault(child.pid, child)
        except psutil.Error:
            pass
        # killpg only while the leader holds the group id (our unreaped child, or a live adopted process)
        if job.popen is not None or job.process.is_running():
            try:
                os.killpg(job.pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for member in job.doomed.values():
            try:
                member.send_signal(sig)  # psutil checks the pid was not reused
            except psutil.Error:
                pass

    # --- callbacks ------------------------------------------------------------------------------
    def _is_terminal(self, job: _Job) -> bool:
        try:
            return self._run_status(job.run_id, job.workspace) in TERMINAL
        except Exception as error:  # noqa: BLE001 - unknown: report, and let on_died decide
            log.warning("local worker: cannot read the status of run %s: %s", job.run_id, error)
            return False

    def _report(self, job: _Job, reason: str) -> None:
        try:
            self._on_died(job.run_id, job.workspace, reason)
        except Exception:  # noqa: BLE001 - the worker keeps supervising the other jobs
            log.exception("local worker: could not mark run %s as failed (%s)", job.run_id, reason)


def _has_exited(job: _Job) -> bool:
    try:
        return not job.process.is_running() or job.process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _kill_leftovers(folder: Path) -> int:
    """SIGKILLs every process still carrying the job's folder in its environment (NIMBUS_JOB_DIR, which the
    runner and its script inherit), wherever it is now: the script runs in a process group of its own, so a
    runner killed outright leaves it running, a child of init. Returns how many were killed."""
    killed = 0
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.environ().get("NIMBUS_JOB_DIR") != str(folder):
                continue
            process.kill()
            killed += 1
        except psutil.Error:  # gone, a zombie, or another user's: not ours to end
            continue
    return killed


def _live_process(pid: int, create_time: float) -> psutil.Process | None:
    """The job's process if it still runs: same pid and same start time (pids are reused)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > _SAME_START_S or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"the runner was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"the runner was killed by signal {-code}"
    return f"the runner exited with code {code}"
