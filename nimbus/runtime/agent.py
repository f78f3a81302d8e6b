"""The agent of an `instance` compute target (`nimbus agent --compute NAME`): runs the target's queued runs here.

It claims runs from the service (`POST …/computes/{name}/claim`: one agent gets each run) and hands each
to the same worker the local platform uses (nimbus/runtime/local_worker.py): `python -m nimbus.runtime.runner`
in its own folder and process group, its max duration enforced, its tree killed on cancel. The worker's
reports (a runner that died, ran too long) go to the service with the run's own token. Each run's token
is kept in its job folder (owner-only), so an agent restarted on the same folder still reports the runs
it adopts.

Stopping (SIGTERM, Ctrl-C): no more claims; running jobs get `grace_s` to finish, then are killed and
their runs marked Failed.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nimbus.client import ApiClient, api_path
from nimbus.config import profile_path
from nimbus.exceptions import AuthenticationError, ConflictError, InvalidError, NimbusError, NotFoundError
from nimbus.home import nimbus_home
from nimbus.runtime.job_spec import JobSpec
from nimbus.runtime.local_worker import LocalWorker
from nimbus.runtime.private_files import write_private_text
from nimbus.runtime.run_states import TERMINAL
from nimbus.workspace import Workspace

TOKEN_FILE = "run-token"
BUSY_POLL_S = 0.2  # while jobs run: how often their ends are noticed and freed slots refilled


def default_jobs_dir(workspace: str, compute: str) -> Path:
    return nimbus_home() / "agent" / workspace / compute / "jobs"


@dataclass
class AgentSettings:
    compute: str
    concurrency: int | None = None  # None: the target's max_concurrent_runs
    poll_seconds: float = 5.0
    grace_s: float = 60.0  # after a stop, how long running jobs may still take before they are killed
    watch_s: float = 5.0  # how often running jobs' runs are checked: one canceled in Nimbus is killed here
    jobs_dir: Path | None = None
    python: str = sys.executable


class Agent:
    def __init__(self, workspace: Workspace, settings: AgentSettings, log: Callable[[str], None] | None = None):
        self.workspace, self.settings = workspace, settings
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self._stopping = threading.Event()
        self._worker = None
        self._tokens: dict[str, str] = {}  # run id -> its run token, from the claim
        self.claimed: list[str] = []  # run ids, in claim order

    # --- lifecycle ------------------------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        """Claims and runs until stop(); with `once`, until the queue is empty and every claimed run ended.
        Returns the number of runs claimed."""
        concurrency = self.settings.concurrency or self._target()["settings"].get("max_concurrent_runs", 1)
        jobs_dir = self.settings.jobs_dir or default_jobs_dir(self.workspace.name, self.settings.compute)
        jobs_dir.mkdir(parents=True, exist_ok=True)
        # The agent's own token may live in its profile: as out of the runs' reach as $NIMBUS_HOME
        self._worker = LocalWorker(jobs_dir, self.workspace.url, self._token_for_launch, self._died, self._status,
                                   concurrency=concurrency, python=self.settings.python,
                                   protected=[profile_path().parent])
        self._log(f"agent of compute target {self.settings.compute!r} (workspace {self.workspace.name!r}): "
                  f"up to {concurrency} run(s) at once, jobs in {jobs_dir}")
        self._log(self._worker.isolation.notice)  # how runs are kept from this machine's Nimbus state
        self._worker.recover()  # jobs of an earlier agent on this folder: adopted, or reported dead
        try:
            self._loop(concurrency, once)
        finally:
            self._shutdown()
        return len(self.claimed)

    def stop(self) -> None:
        """No more claims (safe from a signal handler); run() returns once the running jobs are dealt with."""
        self._stopping.set()

    def _loop(self, concurrency: int, once: bool) -> None:
        drained, watched = False, time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() - watched >= self.settings.watch_s:
                self._stop_ended_runs()
                watched = time.monotonic()
            busy = len(self._worker.active_jobs())
            drained = False
            while busy < concurrency and not self._stopping.is_set():
                if not self._claim():
                    drained = True
                    break
                busy += 1
            if once and drained and not self._worker.active_jobs():
                return
            self._stopping.wait(BUSY_POLL_S if busy or once else self.settings.poll_seconds)

    def _stop_ended_runs(self) -> None:
        """A run canceled in Nimbus while its job runs here: the job's whole tree is stopped."""
        for run_id, state in self._worker.active_jobs().items():
            try:
                ended = state == "running" and self._status(run_id, self.workspace.name) in TERMINAL
            except NimbusError as err:
                self._log(f"cannot read run {run_id}: {err.message}")
                continue
            if ended:
                self._log(f"run {run_id} ended in Nimbus; stopping its job")
                self._worker.cancel(run_id)

    def _shutdown(self) -> None:
        deadline = time.time() + self.settings.grace_s
        while self._worker.active_jobs() and time.time() < deadline:
            time.sleep(BUSY_POLL_S)
        left = list(self._worker.active_jobs())
        for run_id in left:  # reported first: the runner leaves the status alone when stopped
            self._died(run_id, self.workspace.name, "the agent running it was stopped")
            self._worker.cancel(run_id)
        deadline = time.time() + self._worker.kill_grace_s + 5
        while self._worker.active_jobs() and time.time() < deadline:
            time.sleep(BUSY_POLL_S)
        self._worker.stop()

    # --- claims ---------------------------------------------------------------------------------
    def _target(self) -> dict:
        try:
            target = self.workspace.client.get(self._path())
        except NotFoundError:
            raise NotFoundError(f"compute target {self.settings.compute!r} not found in workspace "
                                f"{self.workspace.name!r}; create it with `nimbus compute create`") from None
        if target["type"] != "instance":
            raise InvalidError(f"compute target {self.settings.compute!r} is of type {target['type']}: "
                               "agents run instance targets only", field="compute")
        return target

    def _claim(self) -> bool:
        """Claims one run and hands it to the worker; False when nothing is queued (or the service is away)."""
        try:
            # Never retried: a repeated claim would take a second run, not this one again.
            claimed = self.workspace.client.request("POST", self._path() + "/claim", json={}, retry=False)
        except NimbusError as err:
            self._log(f"claim failed: {err.message}")
            return False
        if not claimed:
            return False
        run, token = claimed["run"], claimed["run_token"]
        self._tokens[run["id"]] = token
        self.claimed.append(run["id"])
        config = run.get("run_config") or {}
        self._log(f"run {run['id']} claimed ({run.get('experiment')})")
        self._worker.submit(JobSpec(run["id"], self.workspace.name, config.get("max_run_duration_s"),
                                    compute=self.settings.compute, node_count=config.get("node_count") or 1,
                                    process_count_per_node=config.get("process_count_per_node") or 1))
        return True

    def _path(self) -> str:
        return api_path("workspaces", self.workspace.name, "computes", self.settings.compute)

    # --- the worker's callbacks -----------------------------------------------------------------
    def _token_for_launch(self, spec) -> str:
        """The claimed token, also kept in the job's folder (created by now) for a later agent's reports."""
        token = self._tokens[spec.run_id]
        path = self._worker.jobs_dir / spec.run_id / TOKEN_FILE
        write_private_text(path, token)
        return token

    def _run_client(self, run_id: str) -> ApiClient | None:
        token = self._tokens.get(run_id)
        if token is None:
            try:
                token = (self._worker.jobs_dir / run_id / TOKEN_FILE).read_text().strip()
            except OSError:
                return None
        return ApiClient(self.workspace.url, token)

    def _status(self, run_id: str, workspace: str) -> str:
        client = self._run_client(run_id)
        if client is None:
            return "Unknown"
        try:
            return client.get(api_path("workspaces", workspace, "runs", run_id))["status"]
        except AuthenticationError:
            return "Completed"  # the token stopped working: its run has ended
        finally:
            client.close()

    def _died(self, run_id: str, workspace: str, reason: str) -> None:
        client = self._run_client(run_id)
        if client is None:
            self._log(f"run {run_id}: {reason} (it cannot be reported: its token is lost)")
            return
        self._log(f"run {run_id}: {reason}")
        try:
            client.post(api_path("workspaces", workspace, "runs", run_id, "status"),
                        {"status": "Failed", "error": {"message": reason}}, retry=True)
        except (AuthenticationError, ConflictError):
            pass  # it ended meanwhile: that outcome stands
        finally:
            client.close()
