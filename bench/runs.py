"""Many runs, then the queries over them: 2,000 runs, a filtered and sorted search, a long history.

    .venv/bin/python bench/runs.py [--baseline]

Starts the local platform on a temporary NIMBUS_HOME and measures:

- runs_per_s: 2,000 runs created one after another in one experiment through the SDK, each with
  `start_logging(tags=<5 tags>)`, 3 `run.log()` calls and `run.complete()`;
- search_p50_ms: the median of 30 searches (after 2 untimed ones) through the HTTP API on one
  keep-alive session: runs with tag model=cnn and metric acc > 0.5, ordered by acc descending,
  first page of 100 (about 250 of the 2,000 runs match);
- history_p50_ms: the median of 30 reads of the full history of a 10,000-step metric (one request).

Both query timings include decoding the JSON reply. With --baseline the same workload runs against
an MLflow tracking server (bench/mlflow_baseline.py) and the ratios are added. The figures are the
last line of output, as one JSON object.
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
from _platform import emit, log, nimbus_platform, p50, percentile, ratio, rounded, timed_ms  # noqa: E402

EXPERIMENT = "bench-runs"


def measure_nimbus(count: int = w.RUNS) -> dict:
    import requests

    from nimbus import Experiment, Workspace

    with nimbus_platform() as (url, token):
        os.environ["NIMBUS_URL"], os.environ["NIMBUS_TOKEN"] = url, token
        ws = Workspace.get("default")
        experiment = Experiment(ws, EXPERIMENT)

        log(f"nimbus runs: {count:,} runs (start_logging with 5 tags, 3 log(), complete)")
        start = time.perf_counter()
        for index in range(count):
            run = experiment.start_logging(tags=w.run_tags(index))
            for name, value in w.run_metrics(index).items():
                run.log(name, value)
            run.complete()
        elapsed = time.perf_counter() - start

        history_run = experiment.start_logging(tags={"purpose": "history"})
        for step in range(w.HISTORY_STEPS):
            history_run.log("loss", w.history_point(step), step=step)
        history_run.complete()

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        (tag, value), (metric, threshold) = w.SEARCH_TAG, w.SEARCH_METRIC
        search_url = f"{url}/v1/workspaces/{ws.name}/experiments/{EXPERIMENT}/runs"
        params = {"tag": f"{tag}={value}", "metric": f"{metric}>{threshold}",
                  "order_by": f"metrics.{w.ORDER_METRIC} desc", "max_results": w.PAGE}
        expected = w.expected_matches(count)

        def search() -> None:
            response = session.get(search_url, params=params)
            response.raise_for_status()
            page = response.json()
            if len(page["runs"]) != min(w.PAGE, expected) or page.get("total") not in (None, expected):
                raise AssertionError(f"search returned {len(page['runs'])} runs of {page.get('total')}, "
                                     f"expected {min(w.PAGE, expected)} of {expected}")
            ordered = [r["metrics"][w.ORDER_METRIC] for r in page["runs"]]
            if ordered != sorted(ordered, reverse=True):
                raise AssertionError("search results are not in order")

        history_url = f"{url}/v1/workspaces/{ws.name}/runs/{history_run.id}/metric-history"

        def history() -> None:
            response = session.get(history_url, params={"name": "loss", "max_results": w.HISTORY_STEPS})
            response.raise_for_status()
            points = response.json()
            if len(points["values"]) != w.HISTORY_STEPS or points.get("next_page_token"):
                raise AssertionError(f"history has {len(points['values'])} points, not {w.HISTORY_STEPS}")

        log(f"nimbus runs: search ({params['tag']}, {params['metric']}, {params['order_by']}) x{w.REPEAT}")
        searches = timed_ms(search, w.REPEAT)
        log(f"nimbus runs: metric history of {w.HISTORY_STEPS:,} steps x{w.REPEAT}")
        histories = timed_ms(history, w.REPEAT)

    return {"runs": count, "seconds": round(elapsed, 2), "runs_per_s": round(count / elapsed, 1),
            "search_matches": expected,
            "search_p50_ms": rounded(p50(searches)), "search_p90_ms": rounded(percentile(searches, 90)),
            "history_p50_ms": rounded(p50(histories)), "history_p90_ms": rounded(percentile(histories, 90))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="store_true", help="also run the MLflow workload and add the ratios")
    parser.add_argument("--runs", type=int, default=w.RUNS,
                        help=f"runs to create, on both sides (default {w.RUNS}; fewer for a quick look)")
    arguments = parser.parse_args()
    if arguments.runs < 1:
        parser.error("--runs must be at least 1")

    began = time.perf_counter()
    result: dict = {"benchmark": "runs", "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    result["nimbus"] = measure_nimbus(arguments.runs)
    nimbus = result["nimbus"]
    log(f"nimbus: {nimbus['runs_per_s']} runs/s, search p50 {nimbus['search_p50_ms']} ms, "
        f"history p50 {nimbus['history_p50_ms']} ms")
    if arguments.baseline:
        import mlflow_baseline

        baseline = mlflow_baseline.measure(["runs"], arguments.runs)
        result["mlflow"] = mlflow = {"version": baseline["mlflow_version"], "server": baseline["server"],
                                     **baseline["runs"]}
        result["runs_per_s_vs_mlflow"] = ratio(nimbus["runs_per_s"], mlflow["runs_per_s"])
        result["search_speedup_vs_mlflow"] = ratio(mlflow["search_p50_ms"], nimbus["search_p50_ms"])
        result["history_speedup_vs_mlflow"] = ratio(mlflow["history_p50_ms"], nimbus["history_p50_ms"])
        result["targets"] = {"runs_per_s_vs_mlflow": ">= 3", "search_speedup_vs_mlflow": ">= 3",
                             "history_speedup_vs_mlflow": ">= 10"}
    result["bench_seconds"] = round(time.perf_counter() - began, 1)
    emit(result)


if __name__ == "__main__":
    main()
