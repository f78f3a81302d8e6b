"""The services a request uses, and the ports they drive, held together (wired in chalicelib/wiring.py)."""
from __future__ import annotations

from dataclasses import dataclass

from chalicelib.compute.dispatcher import Dispatcher
from chalicelib.compute.instance_queue import InstanceQueue
from chalicelib.domain.context import Context
from chalicelib.hosting.port import FunctionHost
from chalicelib.services.compute_targets import ComputeTargets, Provisioner
from chalicelib.services.audit import Audit
from chalicelib.services.datasets import Datasets
from chalicelib.services.datastore_files import DatastoreFiles
from chalicelib.services.datastores import DatastoreAccess, Datastores
from chalicelib.services.deployments import Deployments
from chalicelib.services.endpoint_telemetry import EndpointTelemetry
from chalicelib.services.environments import Environments
from chalicelib.services.experiments import Experiments
from chalicelib.services.identity import Identity
from chalicelib.services.logs import Logs
from chalicelib.services.metrics import Metrics
from chalicelib.services.outputs import Outputs
from chalicelib.services.registry import Registry
from chalicelib.services.runs import Runs
from chalicelib.services.submissions import Submissions
from chalicelib.services.workspace_secrets import WorkspaceSecrets
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.secrets import Secrets


@dataclass
class Services:
    """Everything a request may use. `dispatcher` runs submitted jobs and `host` runs scoring functions
    (None where they are not set up); `secrets` keeps endpoint keys and workspace secrets; `provisioner` makes the AWS
    resources of batch compute targets (None: batch targets cannot be created here); `instance_queue`
    hands runs to the agents of instance targets."""

    ctx: Context
    identity: Identity
    workspaces: Workspaces
    experiments: Experiments
    runs: Runs
    metrics: Metrics
    logs: Logs
    outputs: Outputs
    registry: Registry
    dispatcher: Dispatcher | None = None
    host: FunctionHost | None = None
    secrets: Secrets | None = None
    provisioner: Provisioner | None = None
    instance_queue: InstanceQueue | None = None
    datastore_access: DatastoreAccess | None = None

    @classmethod
    def over(cls, ctx: Context) -> "Services":
        """The services over a context, with no port wired yet."""
        return cls(ctx, Identity(ctx), Workspaces(ctx), Experiments(ctx), Runs(ctx), Metrics(ctx), Logs(ctx),
                   Outputs(ctx), Registry(ctx))

    @property
    def submissions(self) -> Submissions:
        return Submissions(self.ctx, self.dispatcher, self.provisioner)

    @property
    def compute_targets(self) -> ComputeTargets:
        return ComputeTargets(self.ctx, self.provisioner)

    @property
    def environments(self) -> Environments:
        return Environments(self.ctx)

    @property
    def deployments(self) -> Deployments:
        return Deployments(self.ctx, self.host, self.secrets)

    @property
    def workspace_secrets(self) -> WorkspaceSecrets:
        return WorkspaceSecrets(self.ctx, self.secrets)

    @property
    def datastores(self) -> Datastores:
        return Datastores(self.ctx, self.datastore_access, self.workspace_secrets, self.ctx.settings.datastore_roots)

    @property
    def datastore_files(self) -> DatastoreFiles:
        return DatastoreFiles(self.ctx, self.datastores, self.datastore_access)

    @property
    def datasets(self) -> Datasets:
        return Datasets(self.ctx, self.datastore_files)

    @property
    def audit(self) -> Audit:
        return Audit(self.ctx)

    @property
    def telemetry(self) -> EndpointTelemetry:
        return EndpointTelemetry(self.ctx)
