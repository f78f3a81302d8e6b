"""The Dispatcher port: hands a Queued run to a compute target, which runs `python -m nimbus.runner` for it."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING


@dataclass(frozen=True)
class JobSpec:
    run_id: str
    workspace: str
    max_duration_s: int | None  # None: no limit
    compute: str = "local"  # the compute target's name
    target: dict | None = None  # the target's stored item (None for the built-in local target)
    node_count: int = 1
    process_count_per_node: int = 1
    environment: dict | None = None  # the environment version's stored item (None: the runner's interpreter)
    resources: dict | None = None  # {"vcpus", "memory_mb", "gpus"} asked for one node

    @property
    def world_size(self) -> int:
        return self.node_count * self.process_count_per_node

if TYPE_CHECKING:
    from chalicelib.store.table import Operation


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

    def queue_entry(self, spec: JobSpec) -> "Operation | None":
        """A table write that keeps the job queued across restarts, made in the submit transaction."""
        return None


def runner_command(python: str) -> list[str]:
    """The command that runs one job; the run to execute comes from the NIMBUS_* environment."""
    return [python, "-m", "nimbus.runner"]
