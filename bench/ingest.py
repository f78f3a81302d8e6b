"""Metric ingestion through the SDK: 10 metrics x 10,000 steps (100,000 points) in one run.

    .venv/bin/python bench/ingest.py [--baseline]

Starts the local platform on a temporary NIMBUS_HOME, logs every point with
`run.log(f"m{i}", value, step=step)`, and measures:

- points_per_s: 100,000 / the time from the first log() until run.complete() returns (complete()
  flushes the buffer, so by then every point is stored);
- log_call_p50_us / log_call_p99_us: the time of each run.log() call (perf_counter_ns around it);
- table_writes: items the platform wrote to its table between right after start_logging() and right
  after complete(), read from /v1/admin/stats; it includes the one write of the final status.

Afterwards the stored history of every metric is read back and must hold its 10,000 points.
With --baseline the same points go to an MLflow tracking server (bench/mlflow_baseline.py) and the
ratios are added. The figures are the last line of output, as one JSON object.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the SDK, installed or not

import _workload as w  # noqa: E402
from _platform import emit, log, nimbus_platform, p50, p99, percentile, ratio, rounded  # noqa: E402


def table_writes(session, url: str) -> int:
    response = session.get(f"{url}/v1/admin/stats")
    response.raise_for_status()
    return response.json()["table_writes"]


def verify(session, url: str, run_id: str, values: list[list[float]]) -> None:
    """Every metric's stored history must be its 10,000 points, in step order, with the values logged."""
    for metric in range(w.METRICS):
        response = session.get(f"{url}/v1/workspaces/default/runs/{run_id}/metric-history",
                               params={"name": f"m{metric}", "max_results": 100_000})
        response.raise_for_status()
        history = response.json()
        count = len(history["values"])
        if count != w.STEPS or history.get("next_page_token"):
            raise AssertionError(f"m{metric}: {count} points stored (more pages: {bool(history.get('next_page_token'))}),"
                                 f" {w.STEPS} logged")
        if history["steps"] != list(range(w.STEPS)):
            raise AssertionError(f"m{metric}: the stored steps are not 0..{w.STEPS - 1} in order")
        if history["values"] != [values[step][metric] for step in range(w.STEPS)]:
            raise AssertionError(f"m{metric}: the stored values differ from the logged ones")


def measure_nimbus() -> dict:
    import requests

    from nimbus import Experiment, Workspace

    # Computed before timing: the benchmark measures logging, not math.sin.
    values = [[w.point(metric, step) for metric in range(w.METRICS)] for step in range(w.STEPS)]
    names = [f"m{metric}" for metric in range(w.METRICS)]
    calls = [0] * (w.METRICS * w.STEPS)

    with nimbus_platform() as (url, token):
        os.environ["NIMBUS_URL"], os.environ["NIMBUS_TOKEN"] = url, token
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        ws = Workspace.get("default")
        experiment = Experiment(ws, "bench-ingest")
        run = experiment.start_logging(tags={"bench": "ingest"})
        writes_before = table_writes(session, url)
        log(f"nimbus ingest: {len(calls):,} points through run.log()")

        clock = time.perf_counter_ns
        index = 0
        start = clock()
        for step in range(w.STEPS):
            row = values[step]
            for metric in range(w.METRICS):
                before = clock()
                run.log(names[metric], row[metric], step=step)
                calls[index] = clock() - before
                index += 1
        logged = clock()
        run.complete()
        done = clock()

        writes = table_writes(session, url) - writes_before
        log("nimbus ingest: reading every metric's history back")
        verify(session, url, run.id, values)

    seconds = (done - start) / 1e9
    return {
        "points": len(calls),
        "seconds": round(seconds, 3),
        "points_per_s": round(len(calls) / seconds),
        "log_loop_s": round((logged - start) / 1e9, 3),
        "complete_s": round((done - logged) / 1e9, 3),
        "log_call_p50_us": rounded(p50(calls) / 1000),
        "log_call_p99_us": rounded(p99(calls) / 1000),
        "log_call_p999_us": rounded(percentile(calls, 99.9) / 1000),
        "log_call_max_us": rounded(max(calls) / 1000),
        "table_writes": writes,
        "table_writes_note": "items written between start_logging() and complete(), including the final status write",
        "verified": f"{w.METRICS} metrics x {w.STEPS} points read back",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="store_true", help="also run the MLflow workload and add the ratios")
    arguments = parser.parse_args()

    began = time.perf_counter()
    result: dict = {"benchmark": "ingest", "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    result["nimbus"] = measure_nimbus()
    log(f"nimbus: {result['nimbus']['points_per_s']:,} points/s, "
        f"log() p50 {result['nimbus']['log_call_p50_us']} us")
    if arguments.baseline:
        import mlflow_baseline

        baseline = mlflow_baseline.measure(["ingest"])
        result["mlflow"] = {"version": baseline["mlflow_version"], "server": baseline["server"], **baseline["ingest"]}
        nimbus, mlflow = result["nimbus"], result["mlflow"]
        result["points_per_s_vs_mlflow"] = ratio(nimbus["points_per_s"], mlflow["points_per_s"])
        result["log_call_speedup_vs_mlflow"] = ratio(mlflow["log_metric_p50_us"], nimbus["log_call_p50_us"])
        result["targets"] = {"points_per_s_vs_mlflow": ">= 5", "log_call_p50_us": "< 100"}
    result["bench_seconds"] = round(time.perf_counter() - began, 1)
    emit(result)


if __name__ == "__main__":
    main()
