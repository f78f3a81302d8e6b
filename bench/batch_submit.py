"""Submitting runs to AWS Batch: requests and table writes per run against moto, and the job-spec computation.

    .venv/bin/python bench/batch_submit.py [--runs N] [--iterations K]

Inside moto's `mock_aws` (Batch jobs recorded, never run), it sets up the account the unit tests use
(`tests.server.unit.batch_helpers.make_account`: a network, roles, the table, a workspace `team`), provisions a
batch target with `BatchProvisioner.create` (a compute environment and a job queue), then, N (100) times,
creates a Queued run as `Account.queued_run` does and hands it to `BatchDispatcher.submit`. Every AWS
request is counted by service and operation with a `before-call` hook on the boto3 default session (so
on every client made from it: Batch, DynamoDB, STS, KMS), and the table's `writes` counter is read; both only
while `submit()` runs, so creating the runs and provisioning are not in the figures.

Then it times the pure job-spec computation of one run (`batch_spec.register_job_definition` and
`batch_spec.submit_job`) over K (10,000) iterations. The figures are the last line of output, as one
JSON object. Nothing leaves the machine: moto answers every request in this process.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # chalicelib and tests.server.unit.batch_helpers

from _platform import emit, log, p50, percentile, rounded  # noqa: E402

RUNS = 100
ITERATIONS = 10_000
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SECURITY_TOKEN": "testing",
                    "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}


class RequestCounter:
    """botocore `before-call` handler: counts API calls by `service.Operation` while `active`."""

    def __init__(self):
        self.active = False
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, event_name: str, **_: object) -> None:
        if self.active:
            _, service, operation = event_name.split(".", 2)
            self.counts[f"{service}.{operation}"] += 1


def time_spec(spec, *, table: str, image: str, roles, queue: str, api_url: str, iterations: int) -> dict:
    """Microseconds per call of the pure functions a submit computes, each over `iterations` calls."""
    from chalicelib.compute.batch import spec as batch_spec

    definition_arn = "arn:aws:batch:us-east-1:123456789012:job-definition/bench-runner:1"

    def definition():
        return batch_spec.register_job_definition(spec, table=table, default_image=image, roles=roles)

    def job():
        return batch_spec.submit_job(spec, job_queue=queue, job_definition=definition_arn, api_url=api_url,
                                     run_token="nrt_" + "x" * 43, experiment="bench")

    def both():
        definition()
        job()

    timings = {}
    for name, call in (("definition", definition), ("submit", job), ("both", both)):
        for _ in range(min(1000, iterations)):  # warm up
            call()
        # The best of three passes: the least disturbed by anything else on the machine.
        timings[name] = min(_per_call_us(call, iterations) for _ in range(3))
    return timings


def _per_call_us(call, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        call()
    return (time.perf_counter() - start) / iterations * 1e6


def measure(count: int, iterations: int) -> dict:
    for name, value in FAKE_CREDENTIALS.items():
        os.environ[name] = value
    import boto3
    from moto import mock_aws

    from chalicelib.compute.batch import spec as batch_spec
    from chalicelib.compute.batch.dispatcher import BatchDispatcher
    from chalicelib.compute.batch.provisioner import BatchProvisioner
    from chalicelib.services.run_callbacks import run_callbacks
    from nimbus.runtime.job_spec import JobSpec
    from tests.server.unit.batch_helpers import make_account

    logging.getLogger("botocore").setLevel(logging.WARNING)
    with mock_aws(config={"batch": {"use_docker": False}}):
        # Every client below comes from this session and inherits its hook.
        boto3.setup_default_session(region_name=REGION)
        counter = RequestCounter()
        boto3.DEFAULT_SESSION.events.register("before-call", counter)

        account = make_account("nimbus-bench")
        sleeps: list[float] = []
        provisioner = BatchProvisioner(account.settings, account.batch, sleep=sleeps.append, poll_seconds=0)
        settings = account.network()
        counter.active = True
        resources = provisioner.create("team", "gpu", settings)
        counter.active = False
        provision_requests = dict(counter.counts)
        counter.counts.clear()
        target = {"name": "gpu", "type": "batch", "settings": settings, "resources": resources, "state": "Succeeded"}
        log(f"batch: target provisioned ({sum(provision_requests.values())} requests); submitting {count} runs")

        # As a deployed stage: the run token travels sealed with the stage's KMS key (one Encrypt per run).
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
        boto3.client("kms", region_name=REGION).create_alias(AliasName="alias/nimbus-bench-run-tokens", TargetKeyId=key)
        sealing = dataclasses.replace(account.settings, run_token_key="alias/nimbus-bench-run-tokens")
        dispatcher = BatchDispatcher(account.services.ctx, run_callbacks(account.services.ctx), sealing, account.batch)
        table = account.services.ctx.table
        per_run: list[collections.Counter] = []
        writes: list[int] = []
        seconds: list[float] = []
        last_spec = None
        run_ids: list[str] = []
        for index in range(count):
            run = account.queued_run(target)  # as the unit tests create one: not counted
            run_ids.append(run["id"])
            last_spec = JobSpec(run["id"], "team", 3600, compute=target["name"], target=target)
            before_writes, before = table.writes, collections.Counter(counter.counts)
            counter.active = True
            start = time.perf_counter()
            dispatcher.submit(last_spec)
            seconds.append(time.perf_counter() - start)
            counter.active = False
            per_run.append(counter.counts - before)
            writes.append(table.writes - before_writes)
            if index in (0, 1) or (index + 1) % 25 == 0:
                log(f"batch: run {index + 1}/{count}: {sum(per_run[-1].values())} requests "
                    f"({', '.join(f'{k} {v}' for k, v in sorted(per_run[-1].items()))}), {writes[-1]} table writes")

        missing = [run_id for run_id in run_ids
                   if (account.services.runs.get("team", run_id).get("job") or {}).get("type") != "batch"]
        if missing:
            raise AssertionError(f"{len(missing)} runs have no Batch job recorded, e.g. {missing[0]}")
        definitions = account.batch.describe_job_definitions(status="ACTIVE")["jobDefinitions"]
        log(f"batch: every run has its job recorded; Batch lists {len(definitions)} active job definition(s)")
        if len(definitions) != 1:
            raise AssertionError(f"expected one job definition to be registered, found {len(definitions)}")

        roles = dispatcher.roles.roles()
        table_name, image = account.settings.table_name, account.settings.runner_image
        queue = resources["job_queue_arn"]
        api_url = dispatcher.api_url

    # The pure computation, timed after moto has stopped (its Batch backend runs jobs in threads).
    import threading
    log(f"batch: threads left after moto stopped: {threading.active_count()}")
    log(f"batch: timing the job-spec computation, {iterations} iterations")
    timings = time_spec(last_spec, table=table_name, image=image, roles=roles, queue=queue, api_url=api_url,
                        iterations=iterations)
    # The dispatcher also keys its cache of known definitions by the request's JSON, once per run.
    request = batch_spec.register_job_definition(last_spec, table=table_name, default_image=image, roles=roles)
    cache_key_us = min(_per_call_us(lambda: json.dumps(request, sort_keys=True), iterations) for _ in range(3))

    total = collections.Counter()
    for counts in per_run:
        total.update(counts)
    later = collections.Counter()
    for counts in per_run[1:]:
        later.update(counts)
    return {
        "runs": count,
        "aws_requests_per_run": round(sum(total.values()) / count, 2),
        "by_operation": {k: round(v / count, 3) for k, v in sorted(total.items())},
        "table_writes_per_run": round(sum(writes) / count, 2),
        "spec_us_per_run": rounded(timings["both"]),
        "first_run_requests": dict(sorted(per_run[0].items())),
        "later_requests_per_run": round(sum(later.values()) / max(1, count - 1), 2),
        "later_by_operation": {k: round(v / max(1, count - 1), 3) for k, v in sorted(later.items())},
        "first_run_table_writes": writes[0],
        "spec_definition_us": rounded(timings["definition"]),
        "spec_submit_job_us": rounded(timings["submit"]),
        "definition_cache_key_us": rounded(cache_key_us),
        "spec_iterations": iterations,
        "submit_ms_p50_moto": rounded(p50(seconds) * 1000),
        "submit_ms_p90_moto": rounded(percentile(seconds, 90) * 1000),
        "provision_requests": dict(sorted(provision_requests.items())),
        "backoff_sleeps": len(sleeps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs to submit (default {RUNS})")
    parser.add_argument("--iterations", type=int, default=ITERATIONS,
                        help=f"iterations of the spec computation (default {ITERATIONS})")
    arguments = parser.parse_args()
    if arguments.runs < 2 or arguments.iterations < 1:
        parser.error("--runs must be at least 2 and --iterations at least 1")

    began = time.perf_counter()
    result: dict = {"benchmark": "batch_submit", "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    result.update(measure(arguments.runs, arguments.iterations))
    log(f"batch: {result['aws_requests_per_run']} AWS requests and {result['table_writes_per_run']} table writes "
        f"per run; spec {result['spec_us_per_run']} us per run")
    result["bench_seconds"] = round(time.perf_counter() - began, 1)
    emit(result)


if __name__ == "__main__":
    main()
