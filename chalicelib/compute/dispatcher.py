"""The Dispatcher port: hands a Queued run to a compute target, which runs the runner for it (job_spec.py)."""
from __future__ import annotations

import abc

from chalicelib.store.table import Operation
from nimbus.runtime.job_spec import JobSpec


class Dispatcher(abc.ABC):
    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> None:
        """Queue the job and return at once; the target starts it when it has room."""

    @abc.abstractmethod
    def cancel(self, run_id: str) -> bool:
        """Drop the job if queued, kill its whole process tree if running. False when the job is unknown here."""

    def cancel_job(self, spec: JobSpec) -> bool:
        """Cancel knowing the job's target: what a dispatcher of several targets needs to pick one."""
        return self.cancel(spec.run_id)

    def queue_entry(self, spec: JobSpec) -> Operation | None:
        """A table write that keeps the job queued across restarts, made in the submit transaction."""
        return None
