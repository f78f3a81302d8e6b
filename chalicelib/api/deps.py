"""The services a request uses, built once per process from the settings (clients are lazy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import logging

from chalicelib import settings as settings_module
from chalicelib.domain.context import Context
from chalicelib.services.compute_targets import ComputeTargets
from chalicelib.services.experiments import Experiments
from chalicelib.services.identity import Identity
from chalicelib.services.logs import Logs
from chalicelib.services.metrics import Metrics
from chalicelib.services.outputs import Outputs
from chalicelib.services.registry import Registry
from chalicelib.services.runs import Runs
from chalicelib.services.submissions import Submissions
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.factory import build_blobs, build_table

if TYPE_CHECKING:
    from chalicelib.services.environments import Environments
    from chalicelib.compute.dispatcher import Dispatcher
    from chalicelib.compute.instance_queue import InstanceQueue
    from chalicelib.services.compute_targets import Provisioner
    from chalicelib.hosting.port import FunctionHost
    from chalicelib.services.deployments import Deployments
    from chalicelib.services.telemetry import Telemetry
    from chalicelib.store.secrets import Secrets


@dataclass
class Services:
    """Everything a request may use. `dispatcher` runs submitted jobs and `host` runs scoring functions
    (None where they are not set up); `secrets` keeps endpoint keys; `provisioner` makes the AWS
    resources of batch compute targets (None: batch targets cannot be created here)."""

    ctx: Context
    identity: Identity
    workspaces: Workspaces
    experiments: Experiments
    runs: Runs
    metrics: Metrics
    logs: Logs
    outputs: Outputs
    registry: Registry
    dispatcher: "Dispatcher | None" = None
    host: "FunctionHost | None" = None
    secrets: "Secrets | None" = None
    provisioner: "Provisioner | None" = None

    @property
    def submissions(self) -> Submissions:
        return Submissions(self.ctx, self.dispatcher, self.provisioner)

    @property
    def compute_targets(self) -> ComputeTargets:
        return ComputeTargets(self.ctx, self.provisioner)

    @property
    def instance_queue(self) -> "InstanceQueue":
        from chalicelib.compute.instance_queue import InstanceQueue

        return InstanceQueue(self.ctx)

    @property
    def environments(self) -> "Environments":
        from chalicelib.services.environments import Environments

        return Environments(self.ctx)

    @property
    def deployments(self) -> "Deployments":
        from chalicelib.services.deployments import Deployments

        return Deployments(self.ctx, self.host, self.secrets)

    @property
    def telemetry(self) -> "Telemetry":
        from chalicelib.services.telemetry import Telemetry

        return Telemetry(self.ctx)

    @classmethod
    def from_context(cls, ctx: Context) -> "Services":
        return cls(ctx, Identity(ctx), Workspaces(ctx), Experiments(ctx), Runs(ctx), Metrics(ctx), Logs(ctx), Outputs(ctx),
                   Registry(ctx))

    @classmethod
    def from_settings(cls, settings: settings_module.Settings) -> "Services":
        from chalicelib.store.factory import build_secrets

        built = cls.from_context(Context(build_table(settings), build_blobs(settings), settings))
        built.secrets = build_secrets(settings)
        if settings.backend == "aws":
            from chalicelib.hosting.lambda_host import LambdaHost

            built.host = LambdaHost(settings, built.ctx.blobs)
            built.dispatcher, built.provisioner = _aws_compute(built)
        return built


def _aws_compute(built: Services) -> tuple["Dispatcher", "Provisioner | None"]:
    """Instance targets always; AWS Batch when its module is deployed (without it, creating a batch
    target or submitting to one is refused with a 400 that says so)."""
    from chalicelib.compute.instance_queue import InstanceQueue
    from chalicelib.compute.router import ComputeRouter

    dispatchers: dict = {"instance": InstanceQueue(built.ctx)}
    try:
        from chalicelib.compute.batch import BatchDispatcher
        from chalicelib.compute.batch_provisioner import BatchProvisioner
    except ModuleNotFoundError as missing:
        if missing.name not in ("chalicelib.compute.batch", "chalicelib.compute.batch_provisioner"):
            raise  # the modules are there but something they need is not: that must not pass silently
        logging.getLogger(__name__).warning("%s is missing: batch compute targets are off", missing.name)
        return ComputeRouter(dispatchers), None
    dispatchers["batch"] = BatchDispatcher(built, built.ctx.settings)
    return ComputeRouter(dispatchers), BatchProvisioner(built.ctx.settings)


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
