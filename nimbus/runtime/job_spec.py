"""A job to run: what a compute target needs to start the runner for one Queued run, and the runner's command."""
from __future__ import annotations

from dataclasses import dataclass

RUNNER_MODULE = "nimbus.runtime.runner"


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


def runner_command(python: str) -> list[str]:
    """The command that runs one job; the run to execute comes from the NIMBUS_* environment."""
    return [python, "-m", RUNNER_MODULE]
