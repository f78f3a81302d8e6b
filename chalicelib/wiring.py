"""The composition root: the one place the services are built and their ports wired to adapters.

The Chalice app (api/service_locator.py, once per process) and the local platform (local/platform.py)
both call `build_services`; nothing else constructs an adapter of a port the services drive.
"""
from __future__ import annotations

from chalicelib.aws_clients import make_client
from chalicelib.compute.batch.dispatcher import BatchDispatcher
from chalicelib.compute.batch.provisioner import BatchProvisioner
from chalicelib.compute.batch.reconciliation import Reconciler
from chalicelib.compute.instance_queue import InstanceQueue
from chalicelib.compute.target_dispatcher import TargetDispatcher
from chalicelib.domain.context import Context
from chalicelib.hosting.lambda_host import LambdaHost
from chalicelib.hosting.local_hosts import LocalHosts
from chalicelib.local.local_compute import LocalCompute
from chalicelib.services.container import Services
from chalicelib.services.run_callbacks import run_callbacks
from chalicelib.settings import Settings
from chalicelib.store.datastore_access import StoreAccess
from chalicelib.store.factory import build_blobs, build_secrets, build_table
from nimbus.runtime.environment_build import envs_dir


def build_services(settings: Settings, *, ctx: Context | None = None, local_workers: bool = False) -> Services:
    """The services for `settings`, over `ctx` when given (tests bring their own clock or stores).

    On AWS the compute targets are instance queues and Batch, and scoring functions are Lambda functions.
    On the local backend, `local_workers` adds the platform's own job worker and scoring hosts (started
    by the platform); without it, no dispatcher or host is wired (tests plug in their own).
    """
    ctx = ctx or Context(build_table(settings), build_blobs(settings), settings)
    services = Services.over(ctx)
    services.secrets = build_secrets(settings)
    services.datastore_access = StoreAccess(settings, ctx.blobs)
    callbacks = run_callbacks(ctx)
    services.instance_queue = InstanceQueue(ctx, callbacks.mint_run_token)
    if settings.backend == "aws":
        services.host = LambdaHost(settings, ctx.blobs)
        batch = BatchDispatcher(ctx, callbacks, settings)
        services.dispatcher = TargetDispatcher({"instance": services.instance_queue, "batch": batch})
        services.provisioner = BatchProvisioner(settings)
    elif local_workers:
        home = settings.home
        local = LocalCompute(callbacks, ctx.table, home / "jobs", settings.public_url,
                             envs_dir({"NIMBUS_HOME": str(home)}), home=home)
        services.dispatcher = TargetDispatcher({"local": local, "instance": services.instance_queue})
        services.host = LocalHosts(home, ctx.blobs, ctx.table,
                                   on_state=lambda *report: services.deployments.record_state(*report))
    return services


def batch_reconciler(services: Services) -> Reconciler:
    """The reconciler of Batch job-state events and of the sweep, made per invocation: after any test's
    mock has started (a warm function pays about 10 ms)."""
    return Reconciler(services.ctx, run_callbacks(services.ctx), make_client("batch", services.ctx.settings))
