"""The local compute target: the worker that runs submitted jobs, wired to the platform's services.

Submitted runs wait in a durable queue (`QUEUE#local` items, written in the submit transaction), so
a restart loses none: at start the worker adopts jobs still running, reports dead ones and takes the
queued ones again. An item leaves the queue when its job is launched.
"""
from __future__ import annotations

from pathlib import Path

from chalicelib.compute.dispatcher import Dispatcher
from nimbus.runtime.job_spec import JobSpec
from nimbus.runtime.local_worker import LocalWorker
from chalicelib.errors import Conflict, NotFound
from chalicelib.store.table import Put, Query

QUEUE_PK = "QUEUE#local"


def _queue_entry(spec: JobSpec) -> Put:
    return Put({"pk": QUEUE_PK, "sk": spec.run_id, "entity": "queued_job", "workspace": spec.workspace,
                "max_duration_s": spec.max_duration_s})


class LocalCompute(Dispatcher):
    """The Dispatcher the local platform's services use."""

    def __init__(self, services, jobs_dir: Path, api_url: str, concurrency: int = 2):
        self.services = services
        # Runs' environments are built once per definition under the platform's home (nimbus/runtime/environment_build.py).
        self.worker = LocalWorker(jobs_dir, api_url, self._launching, self._died, self._status,
                                  concurrency=concurrency,
                                  job_env={"NIMBUS_ENVS_DIR": str(services.ctx.settings.home / "envs")})

    def submit(self, spec: JobSpec) -> None:
        self.worker.submit(spec)

    def queue_entry(self, spec: JobSpec) -> Put:
        return _queue_entry(spec)

    def cancel(self, run_id: str) -> bool:
        self.services.ctx.table.delete(QUEUE_PK, run_id)
        return self.worker.cancel(run_id)

    def start(self) -> None:
        """Adopt or report the jobs of an earlier start, then take up what is still queued."""
        self.worker.recover()
        for entry in list(self.services.ctx.table.query_all(Query(QUEUE_PK))):
            spec = JobSpec(entry["sk"], entry["workspace"], entry.get("max_duration_s"))
            if self._status(spec.run_id, spec.workspace) == "Queued":
                self.worker.submit(spec)
            else:
                self.services.ctx.table.delete(QUEUE_PK, spec.run_id)

    def stop(self) -> None:
        self.worker.stop()

    # --- the worker's callbacks ----------------------------------------------------------------
    def _launching(self, spec: JobSpec) -> str:
        """The job starts: it leaves the queue and gets a token scoped to its run."""
        self.services.ctx.table.delete(QUEUE_PK, spec.run_id)
        run = self.services.runs.get(spec.workspace, spec.run_id)
        return self.services.identity.create_run_token(spec.run_id, spec.workspace, run["submitted_by"])

    def _died(self, run_id: str, workspace: str, reason: str) -> None:
        try:
            self.services.runs.transition(workspace, run_id, "Failed", {"message": reason})
        except (Conflict, NotFound):
            pass  # it ended meanwhile (its own report, or a cancel): that outcome stands

    def _status(self, run_id: str, workspace: str) -> str:
        try:
            return self.services.runs.get(workspace, run_id)["status"]
        except NotFound:
            return "Canceled"

