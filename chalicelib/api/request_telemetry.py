"""powertools Logger (structured JSON, request id as correlation id) and Metrics (EMF) for the API."""
from __future__ import annotations

import os
import time

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

# Not the Chalice app's name: the two would share one stdlib logger, which Chalice silences.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "nimbus"), logger_name="nimbus.api",
                level=os.environ.get("LOG_LEVEL", "INFO"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Nimbus"))
# Disabled metrics still accumulate and print themselves every 100 values: do not add them at all.
METRICS_ENABLED = not is_metrics_disabled()


def http_middleware(event, get_response):
    """Correlates every log line with the request and emits one request-count and latency metric."""
    context = event.context or {}
    logger.set_correlation_id(context.get("requestId"))
    started = time.perf_counter()
    response = get_response(event)
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.debug("request", extra={"method": event.method, "path": event.path, "status": response.status_code,
                                   "elapsed_ms": round(elapsed_ms, 2)})
    if not METRICS_ENABLED:
        return response
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    if response.status_code >= 500:
        metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="LatencyMs", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    metrics.flush_metrics()  # Chalice routes have no decorator that would flush for us
    return response
