"""Submit latency: a one-line script submitted 20 times, one after another, each timed until it runs and ends.

    .venv/bin/python bench/submit.py [--runs N]

Starts the local platform on a temporary NIMBUS_HOME and submits `print("hi")` (main.py in a folder
of its own) with `Experiment.submit(ScriptRunConfig(source_directory=..., script="main.py"))`. After
each submit() it polls `run.get_details()` every 20 ms until the run has ended, and only then submits
the next one. For each run, from the moment submit() is called:

- to_running: until the run's `started` time, which the service sets when the runner reports
  Running (just before it starts the script); `started` is the server's clock with millisecond
  resolution, on the same machine as the client;
- to_completed: until a poll first sees the run Completed (so it includes up to one poll interval
  and one request);
- submit_call: until submit() returns the run Queued.

Every run must end Completed, or the benchmark fails. The figures are the last line of output, as
one JSON object.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the SDK, installed or not

from _platform import emit, log, nimbus_platform, p50, percentile, rounded  # noqa: E402

RUNS = 20
POLL_S = 0.02
RUN_TIMEOUT_S = 60.0
SCRIPT = 'print("hi")\n'
TERMINAL = ("Completed", "Failed", "Canceled")
STARTED = ("Running", "Finalizing", *TERMINAL)  # statuses a run reaches only after Running
STAGES = ("Queued", "Preparing", "Running", "Finalizing", "Completed")


def epoch(iso: str) -> float:
    """The service's timestamps: ISO 8601 in UTC with milliseconds, e.g. 2024-06-01T12:00:00.123Z."""
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def follow(experiment, config) -> dict:
    """Submits once and polls until the run ends; the times (s) from the submit() call."""
    seen: dict[str, float] = {}
    called_wall, called = time.time(), time.perf_counter()
    run = experiment.submit(config, tags={"bench": "submit"}, show_progress=False)
    returned = time.perf_counter() - called
    seen[run.details.get("status")] = returned
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        details = run.get_details()
        status = details["status"]
        seen.setdefault(status, time.perf_counter() - called)
        if status in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run.id} is still {status} after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    if status != "Completed":
        error = details.get("error") or {}
        raise AssertionError(f"run {run.id} ended {status}: {error.get('message')}")
    polled_running = min(t for s, t in seen.items() if s in STARTED)
    to_running = epoch(details["started"]) - called_wall if details.get("started") else polled_running
    return {"id": run.id, "submit_call": returned, "to_running": to_running, "to_running_polled": polled_running,
            "to_completed": seen["Completed"], "to_ended": epoch(details["ended"]) - called_wall,
            "duration": details.get("duration_s"), "seen": seen}


def measure_nimbus(count: int) -> dict:
    from nimbus import Experiment, ScriptRunConfig, Workspace

    source = Path(tempfile.mkdtemp(prefix="nimbus-bench-submit-"))
    (source / "main.py").write_text(SCRIPT)
    samples = []
    try:
        with nimbus_platform() as (url, token):
            os.environ["NIMBUS_URL"], os.environ["NIMBUS_TOKEN"] = url, token
            experiment = Experiment(Workspace.get("default"), "bench-submit")
            config = ScriptRunConfig(source_directory=str(source), script="main.py")
            log(f"submit: {count} runs of print(\"hi\"), one after another, polling every {POLL_S * 1000:.0f} ms")
            for index in range(count):
                sample = follow(experiment, config)
                samples.append(sample)
                stages = ", ".join(f"{s} {sample['seen'][s]:.3f}" for s in STAGES if s in sample["seen"])
                log(f"submit: run {index + 1}/{count} seen at (s) {stages}; started {sample['to_running']:.3f}")
    finally:
        shutil.rmtree(source, ignore_errors=True)

    def figure(key: str, q: float) -> float:
        return rounded(percentile([s[key] for s in samples], q))

    first_seen = {stage: rounded(p50([s["seen"][stage] for s in samples if stage in s["seen"]]))
                  for stage in STAGES if sum(stage in s["seen"] for s in samples) * 2 > len(samples)}
    return {
        "runs": len(samples),
        "completed": len(samples),
        "to_running_p50_s": figure("to_running", 50),
        "to_running_p90_s": figure("to_running", 90),
        "to_completed_p50_s": figure("to_completed", 50),
        "to_completed_p90_s": figure("to_completed", 90),
        "submit_call_p50_s": figure("submit_call", 50),
        "submit_call_p90_s": figure("submit_call", 90),
        "to_running_polled_p50_s": figure("to_running_polled", 50),
        "to_ended_p50_s": figure("to_ended", 50),
        "run_duration_p50_s": rounded(p50([s["duration"] for s in samples if s["duration"] is not None])),
        "status_first_seen_p50_s": first_seen,
        "poll_interval_s": POLL_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs to submit (default {RUNS})")
    arguments = parser.parse_args()
    if arguments.runs < 1:
        parser.error("--runs must be at least 1")

    began = time.perf_counter()
    result: dict = {"benchmark": "submit", "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    result["nimbus"] = nimbus = measure_nimbus(arguments.runs)
    log(f"nimbus: submit to Running p50 {nimbus['to_running_p50_s']} s, "
        f"to Completed p50 {nimbus['to_completed_p50_s']} s")
    result["bench_seconds"] = round(time.perf_counter() - began, 1)
    emit(result)


if __name__ == "__main__":
    main()
