"""The MLflow baseline: the workloads of ingest.py and runs.py against an MLflow tracking server.

    .venv/bin/python bench/mlflow_baseline.py [--workload ingest|runs|all] [--runs N]

The first use creates bench/.venv-mlflow with the MLflow version pinned in
bench/requirements-mlflow.txt (a few minutes, once). Each invocation then starts

    mlflow server --backend-store-uri sqlite:///<tmp>/mlflow.db --default-artifact-root <tmp>/artifacts
                  --host 127.0.0.1 --port <free> --workers 1

on a fresh temporary directory (with MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: the GenAI job
runner it would start beside the server has nothing to do with tracking), drives it with
`mlflow.tracking.MlflowClient` from that virtual environment, stops it, and prints the figures as
JSON on the last line. ingest.py and runs.py call `measure()` when given --baseline.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _workload as w  # noqa: E402
from _platform import emit, free_port, http_status, last_json_line, log, p50, p99, percentile, rounded, server, timed_ms  # noqa: E402

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-mlflow"
VENV_PYTHON = VENV / "bin" / "python"
REQUIREMENTS = BENCH / "requirements-mlflow.txt"
STAMP = VENV / ".installed"  # holds the requirements it was installed from
WORKLOADS = ("ingest", "runs")


# --- outside: the Nimbus side's interpreter ------------------------------------------------------
def ensure_venv() -> Path:
    """bench/.venv-mlflow with the pinned MLflow; created or updated when the pins change."""
    wanted = REQUIREMENTS.read_text()
    if VENV_PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return VENV_PYTHON
    log(f"installing {REQUIREMENTS.name} into {VENV.relative_to(BENCH.parent)} (once; a few minutes)")
    base = getattr(sys, "_base_executable", None) or sys.executable
    if not VENV_PYTHON.exists():
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS)], check=True, stdout=sys.stderr)
    STAMP.write_text(wanted)
    return VENV_PYTHON


def measure(workloads: list[str], runs: int = w.RUNS) -> dict:
    """Run the MLflow side in its own interpreter; returns its figures."""
    python = ensure_venv()
    command = [str(python), str(Path(__file__).resolve()), "--inside", "--runs", str(runs), "--workload", *workloads]
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=BENCH.parent)
    if finished.returncode != 0:
        raise RuntimeError(f"the MLflow baseline failed (exit {finished.returncode}); its output:\n{finished.stdout}")
    return last_json_line(finished.stdout)


# --- inside: bench/.venv-mlflow ------------------------------------------------------------------
def mlflow_server(home: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(VENV / "bin" / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
               "--default-artifact-root", str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    # The job runner (a pool of huey consumers for MLflow's GenAI jobs) plays no part in tracking; on a
    # 2-core machine its start-up would only take CPU from the server being measured.
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return url, server(command, ready=lambda: http_status(f"{url}/health") == 200, log_path=home / "server.log",
                       cwd=home, env=env, timeout=180, name="mlflow server")


def ingest(client) -> dict:
    from mlflow.entities import Metric

    experiment = client.create_experiment("bench-ingest")
    run_id = client.create_run(experiment).info.run_id
    total = w.METRICS * w.STEPS
    log(f"mlflow ingest: {total:,} points in log_batch calls of {w.MLFLOW_BATCH}")
    batch: list = []
    calls = 0
    start = time.perf_counter()
    for step in range(w.STEPS):
        stamp = int(time.time() * 1000)
        for metric in range(w.METRICS):
            batch.append(Metric(f"m{metric}", w.point(metric, step), stamp, step))
        if len(batch) >= w.MLFLOW_BATCH:
            client.log_batch(run_id, metrics=batch, synchronous=True)
            calls += 1
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch, synchronous=True)
        calls += 1
    client.set_terminated(run_id)
    elapsed = time.perf_counter() - start
    for metric in range(w.METRICS):
        history = client.get_metric_history(run_id, f"m{metric}")
        if len(history) != w.STEPS:
            raise AssertionError(f"MLflow stored {len(history)} points of m{metric}, not {w.STEPS}")

    log(f"mlflow ingest: {w.SYNC_LOG_CALLS} synchronous log_metric calls")
    sync_run = client.create_run(experiment).info.run_id
    steps = iter(range(10**9))
    samples = timed_ms(lambda: client.log_metric(sync_run, "loss", 0.5, step=next(steps), synchronous=True),
                       w.SYNC_LOG_CALLS)
    client.set_terminated(sync_run)
    return {"points": total, "log_batch_calls": calls, "seconds": round(elapsed, 2),
            "points_per_s": round(total / elapsed), "log_metric_p50_us": rounded(p50(samples) * 1000),
            "log_metric_p99_us": rounded(p99(samples) * 1000)}


def runs(client, count: int = w.RUNS) -> dict:
    from mlflow.entities import Metric

    experiment = client.create_experiment("bench-runs")
    log(f"mlflow runs: {count:,} runs (create_run with 5 tags, log_batch of 3 metrics, set_terminated)")
    start = time.perf_counter()
    for index in range(count):
        run_id = client.create_run(experiment, tags=w.run_tags(index)).info.run_id
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in w.run_metrics(index).items()],
                         synchronous=True)
        client.set_terminated(run_id)
    elapsed = time.perf_counter() - start

    history_run = client.create_run(experiment, tags={"purpose": "history"}).info.run_id
    for first in range(0, w.HISTORY_STEPS, w.MLFLOW_BATCH):
        stamp = int(time.time() * 1000)
        client.log_batch(history_run, metrics=[Metric("loss", w.history_point(s), stamp, s)
                                               for s in range(first, min(first + w.MLFLOW_BATCH, w.HISTORY_STEPS))],
                         synchronous=True)
    client.set_terminated(history_run)

    (tag, value), (metric, threshold) = w.SEARCH_TAG, w.SEARCH_METRIC
    query = f"tags.{tag} = '{value}' and metrics.{metric} > {threshold}"
    order = [f"metrics.{w.ORDER_METRIC} DESC"]

    def search():
        found = client.search_runs([experiment], filter_string=query, order_by=order, max_results=w.PAGE)
        if len(found) != min(w.PAGE, w.expected_matches(count)):
            raise AssertionError(f"MLflow search returned {len(found)} runs")
        values = [r.data.metrics[w.ORDER_METRIC] for r in found]
        if values != sorted(values, reverse=True):
            raise AssertionError("MLflow search results are not in order")

    def history():
        points = client.get_metric_history(history_run, "loss")
        if len(points) != w.HISTORY_STEPS:
            raise AssertionError(f"MLflow history has {len(points)} points, not {w.HISTORY_STEPS}")

    log(f"mlflow runs: search_runs ({query!r}, {order[0]}) x{w.REPEAT}")
    searches = timed_ms(search, w.REPEAT)
    log(f"mlflow runs: get_metric_history of {w.HISTORY_STEPS:,} steps x{w.REPEAT}")
    histories = timed_ms(history, w.REPEAT)
    return {"runs": count, "seconds": round(elapsed, 2), "runs_per_s": round(count / elapsed, 1),
            "search_p50_ms": rounded(p50(searches)), "search_p90_ms": rounded(percentile(searches, 90)),
            "history_p50_ms": rounded(p50(histories)), "history_p90_ms": rounded(percentile(histories, 90))}


def inside(workloads: list[str], count: int = w.RUNS) -> dict:
    import mlflow
    from mlflow.tracking import MlflowClient

    home = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    try:
        log(f"starting mlflow server {mlflow.__version__} (sqlite, 1 worker)")
        started = time.perf_counter()
        url, context = mlflow_server(home)
        with context:
            log(f"mlflow server answers at {url} after {time.perf_counter() - started:.1f} s")
            client = MlflowClient(tracking_uri=url)
            result: dict = {"system": "mlflow", "mlflow_version": mlflow.__version__,
                            "server": "mlflow server, sqlite backend store, --workers 1"}
            if "ingest" in workloads:
                result["ingest"] = ingest(client)
            if "runs" in workloads:
                result["runs"] = runs(client, count)
            return result
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", nargs="+", choices=[*WORKLOADS, "all"], default=["all"])
    parser.add_argument("--runs", type=int, default=w.RUNS, help=f"runs the runs workload creates (default {w.RUNS})")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    workloads = list(WORKLOADS) if "all" in arguments.workload else arguments.workload
    emit(inside(workloads, arguments.runs) if arguments.inside else measure(workloads, arguments.runs))


if __name__ == "__main__":
    main()
