"""The Dispatcher port: hands a Queued run to a compute target, which runs the runner for it (job_spec.py)."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

from chalicelib.store.table import Operation
from nimbus.runtime.job_spec import JobSpec


@dataclass(frozen=True)
class RunCallbacks:
    """What a compute target may read and report of runs. The services that drive a target hand it these,
    so no adapter calls a service (chalicelib/services/run_callbacks.py makes them)."""

    get_run: Callable[[str, str], dict]  # (workspace, run_id) -> the run; NotFound when it is gone
    fail_run: Callable[[str, str, dict], bool]  # (workspace, run_id, error) -> False when it had ended already
    mint_run_token: Callable[[str, str, str], str]  # (run_id, workspace, user) -> a token for that run only
    note_attempt_ends: Callable[[str, str, dict], bool]  # (workspace, run_id, {attempt: end}) -> recorded?


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
