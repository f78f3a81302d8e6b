"""The services a request uses, built once per process from the settings (clients are lazy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib import settings as settings_module
from chalicelib.services.common import Context
from chalicelib.services.experiments import Experiments
from chalicelib.services.identity import Identity
from chalicelib.services.logs import Logs
from chalicelib.services.metrics import Metrics
from chalicelib.services.outputs import Outputs
from chalicelib.services.runs import Runs
from chalicelib.services.submissions import Submissions
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.factory import build_blobs, build_table

if TYPE_CHECKING:
    from chalicelib.compute.dispatcher import Dispatcher


@dataclass
class Services:
    """Everything a request may use. `dispatcher` runs submitted jobs (None where no compute is set up)."""

    ctx: Context
    identity: Identity
    workspaces: Workspaces
    experiments: Experiments
    runs: Runs
    metrics: Metrics
    logs: Logs
    outputs: Outputs
    dispatcher: "Dispatcher | None" = None

    @property
    def submissions(self) -> Submissions:
        return Submissions(self.ctx, self.dispatcher)

    @classmethod
    def from_context(cls, ctx: Context) -> "Services":
        return cls(ctx, Identity(ctx), Workspaces(ctx), Experiments(ctx), Runs(ctx), Metrics(ctx), Logs(ctx), Outputs(ctx))

    @classmethod
    def from_settings(cls, settings: settings_module.Settings) -> "Services":
        return cls.from_context(Context(build_table(settings), build_blobs(settings), settings))


_current: Services | None = None


def services() -> Services:
    global _current
    if _current is None:
        _current = Services.from_settings(settings_module.current())
    return _current


def use(replacement: Services | None) -> None:
    """Install the services every route uses (the local platform and the tests build their own)."""
    global _current
    _current = replacement
