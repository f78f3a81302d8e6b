"""The services' Dispatcher: one over several, each job going to the dispatcher of its compute target's type.

The services keep a single `dispatcher`; which types it can run depends on the deployment (the local
platform: `local` and `instance`; AWS: `instance` and `batch`).
"""
from __future__ import annotations

from chalicelib.compute.dispatcher import Dispatcher
from chalicelib.errors import Invalid
from chalicelib.store.table import Operation
from nimbus.runtime.job_spec import JobSpec


def target_type(spec: JobSpec) -> str:
    return "local" if spec.target is None else spec.target["type"]


class TargetDispatcher(Dispatcher):
    def __init__(self, dispatchers: dict[str, Dispatcher]):
        self.dispatchers = dict(dispatchers)

    def dispatcher_for(self, spec: JobSpec) -> Dispatcher:
        kind = target_type(spec)
        chosen = self.dispatchers.get(kind)
        if chosen is None:
            runnable = ", ".join(sorted(self.dispatchers)) or "none"
            raise Invalid(f"compute target {spec.compute!r} is of type {kind}, which this deployment cannot run "
                          f"(it runs: {runnable})", field="run_config.compute")
        return chosen

    def queue_entry(self, spec: JobSpec) -> Operation | None:
        return self.dispatcher_for(spec).queue_entry(spec)

    def submit(self, spec: JobSpec) -> None:
        self.dispatcher_for(spec).submit(spec)

    def cancel_job(self, spec: JobSpec) -> bool:
        chosen = self.dispatchers.get(target_type(spec))
        return chosen.cancel_job(spec) if chosen is not None else False

    def cancel(self, run_id: str) -> bool:
        """Without the target: every dispatcher is asked (each ignores jobs it does not know)."""
        return any([d.cancel(run_id) for d in self.dispatchers.values()])

    def stop(self) -> None:
        """Stops the dispatchers that run work in this process (the local worker)."""
        for dispatcher in self.dispatchers.values():
            stop = getattr(dispatcher, "stop", None)
            if callable(stop):
                stop()

    def get(self, kind: str) -> Dispatcher | None:
        return self.dispatchers.get(kind)
