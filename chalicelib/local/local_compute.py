"""The local compute target: the worker that runs submitted jobs on this machine, as the platform's Dispatcher.

Submitted runs wait in a durable queue (`QUEUE#local` items, written in the submit transaction), so
a restart loses none: at start the worker adopts jobs still running, reports dead ones and takes the
queued ones again. An item leaves the queue once its job's process is recorded (a restart adopts it
from then on), so a run whose launch a kill interrupted is still in the queue at the next start: a
runner it may have started unrecorded is killed, and the run is queued again (still Queued) or failed
(its runner had begun to report). Runs are read and reported through the callbacks the services hand
it (RunCallbacks).
"""
from __future__ import annotations

from pathlib import Path

from chalicelib.compute.dispatcher import Dispatcher, RunCallbacks
from chalicelib.errors import NotFound
from chalicelib.store.table import Put, Query, Table
from nimbus.runtime.job_spec import JobSpec
from nimbus.runtime.local_worker import LocalWorker
from nimbus.runtime.run_states import TERMINAL

QUEUE_PK = "QUEUE#local"
LAUNCH_INTERRUPTED = "the platform stopped while starting its runner"


def _queue_entry(spec: JobSpec) -> Put:
    return Put({"pk": QUEUE_PK, "sk": spec.run_id, "entity": "queued_job", "workspace": spec.workspace,
                "max_duration_s": spec.max_duration_s})


class LocalCompute(Dispatcher):
    def __init__(self, runs: RunCallbacks, table: Table, jobs_dir: Path, api_url: str, envs_dir: Path,
                 concurrency: int = 2, home: Path | None = None):
        self.runs, self.table = runs, table
        # Runs' environments are built once per definition under the platform's home (environment_build.py);
        # the home itself is out of the runs' scripts' reach (run_isolation.py).
        self.worker = LocalWorker(jobs_dir, api_url, self._launching, self._died, self._status,
                                  concurrency=concurrency, job_env={"NIMBUS_ENVS_DIR": str(envs_dir)},
                                  on_launched=self._launched, protected=[home] if home else [])

    def submit(self, spec: JobSpec) -> None:
        self.worker.submit(spec)

    def queue_entry(self, spec: JobSpec) -> Put:
        return _queue_entry(spec)

    def cancel(self, run_id: str) -> bool:
        self.table.delete(QUEUE_PK, run_id)
        return self.worker.cancel(run_id)

    def start(self) -> None:
        """Adopt or report the jobs of an earlier start, then take up what is still queued."""
        self.worker.recover()
        adopted = self.worker.active_jobs()
        for entry in list(self.table.query_all(Query(QUEUE_PK))):
            spec = JobSpec(entry["sk"], entry["workspace"], entry.get("max_duration_s"))
            if spec.run_id in adopted:  # recorded just before the stop: adopted, it has left the queue
                self.table.delete(QUEUE_PK, spec.run_id)
                continue
            self.worker.end_unrecorded(spec.run_id)  # a runner whose launch the stop interrupted
            status = self._status(spec.run_id, spec.workspace)
            if status == "Queued":
                self.worker.submit(spec)
                continue
            if status not in TERMINAL:
                self._died(spec.run_id, spec.workspace, LAUNCH_INTERRUPTED)
            self.table.delete(QUEUE_PK, spec.run_id)

    def stop(self) -> None:
        self.worker.stop()

    # --- the worker's callbacks ----------------------------------------------------------------
    def _launching(self, spec: JobSpec) -> str:
        """The job starts: it gets a token scoped to its run."""
        run = self.runs.get_run(spec.workspace, spec.run_id)
        return self.runs.mint_run_token(spec.run_id, spec.workspace, run["submitted_by"])

    def _launched(self, spec: JobSpec) -> None:
        """Its process is recorded in its folder, where a restart finds it: it leaves the queue."""
        self.table.delete(QUEUE_PK, spec.run_id)

    def _died(self, run_id: str, workspace: str, reason: str) -> None:
        self.runs.fail_run(workspace, run_id, {"message": reason})  # False: it ended meanwhile, that stands
        self.table.delete(QUEUE_PK, run_id)  # e.g. its runner could not start: nothing of it is left to launch

    def _status(self, run_id: str, workspace: str) -> str:
        try:
            return self.runs.get_run(workspace, run_id)["status"]
        except NotFound:
            return "Canceled"
