"""AWS Batch events: job state changes and the periodic sweep, handed to compute/batch/reconciliation.py. The sweep
also takes batch compute targets being created and deployments rolling out a step further (Lambda emits no
event when a function becomes ready, so reads and this sweep are what advance a deployment).

Chalice makes each handler a Lambda function of its own (`chalice package`: an EventBridge rule with
this pattern, and a schedule), sharing the API function's role, settings and code.
"""
from __future__ import annotations

from chalice import Blueprint, Rate

from chalicelib.api.request_telemetry import logger
from chalicelib.api.service_locator import services
from chalicelib.compute.batch.reconciliation import EVENT_SOURCE, EVENT_TYPE, Reconciler
from chalicelib.wiring import batch_reconciler

bp = Blueprint(__name__)


def reconciler() -> Reconciler:
    return batch_reconciler(services())


@bp.on_cw_event({"source": [EVENT_SOURCE], "detail-type": [EVENT_TYPE]}, name="batch_job_state_change")
def batch_job_state_change(event) -> dict:
    outcome = reconciler().on_job_event(event.to_dict())
    logger.info("batch job event", extra={"job_id": (event.detail or {}).get("jobId"), "outcome": outcome})
    return {"outcome": outcome}


@bp.schedule(Rate(5, unit=Rate.MINUTES), name="batch_sweep",
             description="Fails runs whose Batch job or runner is gone; advances batch targets being created "
                         "and deployments rolling out")
def batch_sweep(event) -> dict:
    ctx = services().ctx
    targets = services().compute_targets.sweep()  # first: a failure of the run sweep must not hold creations up
    logger.info("compute target sweep", extra=targets)
    try:
        logger.info("deployment sweep", extra=services().deployments.sweep())
    except Exception:  # noqa: BLE001 - logged; the run sweep below must still run
        logger.exception("deployment sweep failed")
    counts = reconciler().sweep(ctx.clock())
    logger.info("batch sweep", extra=counts)
    return counts
