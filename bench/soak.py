"""Soak: a fixed-rate mixed load against one local platform for up to 30 minutes, loopback only.

Five kinds of request are started on their own fixed schedules (open loop: a slow answer never delays
the next start): metric ingest into a few long runs, run searches over the experiment they fill, script
run submissions, model registrations and scoring requests to a deployment. Each request's latency runs
from the moment it was due, so a platform that falls behind shows it. Meanwhile the platform's resident
memory is sampled at jittered intervals.

The figures are the last line of stdout, one JSON object: requests and errors per kind (goal 0 errors),
p50/p99 per kind in the window after warm-up and in the last window, and resident memory over time
with its growth from the first window to the last (goal under 10 %). Afterwards every ingested point is
read back and every submitted run must have ended Completed. The exit status is 1 on any error, loss,
or (for runs of 5 minutes or more) growth past the limit.

    .venv/bin/python bench/soak.py [--duration 1800] [--rate ingest=4,search=2,score=10,register=0.5,submit=0.1]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import psutil  # noqa: E402

from bench._platform import emit, log, percentile, platform_with_home, rounded  # noqa: E402
from nimbus import Experiment, Model, Run, ScriptRunConfig, Workspace  # noqa: E402
from nimbus.client import ApiClient  # noqa: E402
from nimbus.webservice import InferenceConfig, Webservice, deploy  # noqa: E402

MAX_DURATION_S = 1800.0
DEFAULT_RATES = {"ingest": 4.0, "search": 2.0, "score": 10.0, "register": 0.5, "submit": 0.1}
EXPERIMENT = "soak"
INGEST_RUNS = 4  # runs taking metric batches at once; each one is completed and replaced after ROTATE batches
POINTS_PER_BATCH = 100
ROTATE_AFTER_BATCHES = 200
WORKERS = 32
SAMPLE_EVERY_S = 10.0  # at most; short runs sample more often
GROWTH_LIMIT = 0.10
GROWTH_JUDGED_FROM_S = 300.0  # shorter runs have no steady state to judge
JOB_SCRIPT = "from nimbus import Run\nRun.get_context().log('done', 1.0)\nprint('soak job')\n"
SCORE_SCRIPT = "def init():\n    pass\n\ndef run(raw_data):\n    import json\n    rows = json.loads(raw_data)['data']\n" \
               "    return [sum(row) for row in rows]\n"


def phases(duration: float) -> tuple[float, float]:
    """(warm-up, window): the start window follows the warm-up, the end window closes the run."""
    warmup = min(max(60.0, duration * 0.1), duration / 3)
    return warmup, max(duration * 0.1, min(duration / 3, 5.0))


class Ledger:
    """Every finished request as (kind, due time, latency, error), from any thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries: list[tuple[str, float, float, str | None]] = []

    def record(self, kind: str, due: float, latency_s: float, error: str | None) -> None:
        with self.lock:
            self.entries.append((kind, due, latency_s, error))


class IngestRuns:
    """A few runs that take metric batches in turn; one batch at a time per run."""

    def __init__(self, experiment: Experiment, rng: random.Random):
        self.experiment, self.rng = experiment, rng
        self.free: list[dict] = [self._start() for _ in range(INGEST_RUNS)]
        self.done: list[dict] = []
        self.lock = threading.Condition()

    def _start(self) -> dict:
        run = self.experiment.start_logging(tags={"model": self.rng.choice(["cnn", "rnn"]), "purpose": "ingest"})
        run.log("acc", self.rng.random())
        return {"run": run, "steps": 0, "batches": 0}

    def batch(self) -> None:
        with self.lock:
            while not self.free:
                self.lock.wait()
            entry = self.free.pop()
        try:
            first = entry["steps"]
            for step in range(first, first + POINTS_PER_BATCH):
                entry["run"].log("loss", 1.0 / (1 + step), step=step)
            entry["run"].flush(timeout=60)
            entry["steps"] += POINTS_PER_BATCH
            entry["batches"] += 1
            if entry["batches"] >= ROTATE_AFTER_BATCHES:
                entry["run"].complete()
                self.done.append(entry)
                entry = self._start()
        finally:
            with self.lock:
                self.free.append(entry)
                self.lock.notify()

    def finish(self) -> list[dict]:
        for entry in self.free:
            entry["run"].complete()
        return self.done + self.free


class Load:
    """The platform's workspace, set up once, and one function per kind of request."""

    def __init__(self, url: str, token: str, scratch: Path, seed: int):
        self.rng = random.Random(seed)
        self.workspace = Workspace("default", client=ApiClient(url, token))
        self.experiment = Experiment(self.workspace, EXPERIMENT)
        self.ingest_runs = IngestRuns(self.experiment, self.rng)
        self.job_source = scratch / "job"
        self.job_source.mkdir()
        (self.job_source / "job.py").write_text(JOB_SCRIPT)
        self.model_file = scratch / "weights.bin"
        self.model_file.write_bytes(self.rng.randbytes(4096))
        score_source = scratch / "score"
        score_source.mkdir()
        (score_source / "score.py").write_text(SCORE_SCRIPT)
        model = Model.register(self.workspace, "soak-scorer", self.model_file, show_progress=False)
        deploy(self.workspace, "blue", [model], InferenceConfig(score_source / "score.py"), endpoint="soak",
               show_progress=False)
        self.service = Webservice(self.workspace, "soak")
        self.submitted: list[Run] = []
        self.lock = threading.Lock()

    def ingest(self) -> None:
        self.ingest_runs.batch()

    def search(self) -> None:
        page = self.workspace.client.get(f"/v1/workspaces/default/experiments/{EXPERIMENT}/runs",
                                         tag="model=cnn", order_by="metrics.acc desc", max_results=50)
        scores = [run["metrics"]["acc"] for run in page["runs"] if "acc" in run.get("metrics", {})]
        if scores != sorted(scores, reverse=True):
            raise AssertionError("search results are not in order")

    def submit(self) -> None:
        run = self.experiment.submit(ScriptRunConfig(source_directory=self.job_source, script="job.py"))
        with self.lock:
            self.submitted.append(run)

    def register(self) -> None:
        Model.register(self.workspace, "soak-model", self.model_file, tags={"at": f"{time.time():.3f}"},
                       show_progress=False)

    def score(self) -> None:
        row = [self.rng.random() for _ in range(4)]
        answer = self.service.run({"data": [row]})
        if len(answer) != 1 or abs(answer[0] - sum(row)) > 1e-9:
            raise AssertionError(f"scoring answered {answer!r}")


def platform_process(home: Path) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        command = process.info.get("cmdline") or []
        if "chalicelib.local" in command and str(home) in command:
            return process
    raise RuntimeError(f"no platform process serves {home}")


def sample_memory(process: psutil.Process, began: float, every_s: float, stop: threading.Event,
                  samples: list) -> None:
    """(seconds, platform RSS MiB, its children's RSS MiB) at jittered intervals: no periodic work of the
    platform's can line up with the samples."""
    rng = random.Random(1)
    while True:
        try:
            rss = process.memory_info().rss
            children = 0
            for child in process.children(recursive=True):
                try:
                    children += child.memory_info().rss
                except psutil.Error:
                    pass  # ended between listing and reading
        except psutil.Error:
            return
        samples.append((round(time.monotonic() - began, 1), round(rss / 2**20, 1), round(children / 2**20, 1)))
        if stop.wait(every_s * rng.uniform(0.7, 1.3)):
            return


def schedule(kind: str, call, rate: float, began: float, duration: float, pool: ThreadPoolExecutor,
             ledger: Ledger, stop: threading.Event) -> None:
    """Start `call` every 1/rate seconds from `began` until `duration`, never waiting for an answer."""
    def timed(due: float) -> None:
        error = None
        try:
            call()
        except Exception as failure:  # every failure is a figure of the soak, none ends it
            error = f"{type(failure).__name__}: {failure}"[:300]
        ledger.record(kind, due - began, time.monotonic() - due, error)

    interval, number = 1.0 / rate, 0
    while True:
        due = began + number * interval
        if due - began >= duration or stop.wait(max(0.0, due - time.monotonic())):
            return
        pool.submit(timed, due)
        number += 1


def latency_figures(entries: list, kind: str, start: tuple[float, float], end: tuple[float, float]) -> dict:
    figures = {}
    for label, (low, high) in (("start", start), ("end", end)):
        latencies = [latency * 1000 for k, due, latency, _ in entries if k == kind and low <= due < high]
        figures[f"{label}_n"] = len(latencies)
        figures[f"{label}_p50_ms"] = rounded(percentile(latencies, 50)) if latencies else None
        figures[f"{label}_p99_ms"] = rounded(percentile(latencies, 99)) if latencies else None
    return figures


def median_in(samples: list, low: float, high: float) -> float | None:
    values = [rss for at, rss, _ in samples if low <= at <= high]
    return statistics.median(values) if values else None


def ended(runs: list[Run], wait_s: float) -> dict[str, str]:
    """Each submitted run's final status, waiting up to `wait_s` for the last ones."""
    deadline, statuses = time.monotonic() + wait_s, {}
    for run in runs:
        while True:
            status = run.get_details()["status"]
            if status in ("Completed", "Failed", "Canceled") or time.monotonic() > deadline:
                statuses[run.id] = status
                break
            time.sleep(0.5)
    return statuses


def lost_points(workspace: Workspace, ingest_runs: list[dict]) -> int:
    """Acknowledged (flushed) points missing from their run's history."""
    lost = 0
    for entry in ingest_runs:
        if not entry["steps"]:
            continue  # never given a batch
        history = Run(workspace, entry["run"].id).get_metric_history("loss")
        lost += len(set(range(entry["steps"])) - set(history["steps"]))
    return lost


def run_soak(duration: float, rates: dict[str, float], seed: int) -> dict:
    warmup, window = phases(duration)
    ledger, stop = Ledger(), threading.Event()
    samples: list = []
    with platform_with_home() as (url, token, home), tempfile.TemporaryDirectory() as scratch:
        load = Load(url, token, Path(scratch), seed)
        process = platform_process(home)
        calls = {"ingest": load.ingest, "search": load.search, "submit": load.submit,
                 "register": load.register, "score": load.score}
        log(f"soak: {duration:.0f} s at {rates} against {url} (warm-up {warmup:.0f} s, windows of {window:.0f} s)")
        began = time.monotonic()
        every_s = min(SAMPLE_EVERY_S, duration / 60)
        sampler = threading.Thread(target=sample_memory, args=(process, began, every_s, stop, samples), daemon=True)
        sampler.start()
        with ThreadPoolExecutor(WORKERS) as pool:
            schedulers = [threading.Thread(target=schedule, args=(kind, calls[kind], rate, began, duration, pool,
                                                                  ledger, stop), daemon=True)
                          for kind, rate in rates.items() if rate > 0]
            for thread in schedulers:
                thread.start()
            progress_at = began
            while any(thread.is_alive() for thread in schedulers):
                time.sleep(1.0)
                if time.monotonic() - progress_at >= 60:
                    progress_at = time.monotonic()
                    errors = sum(1 for entry in ledger.entries if entry[3])
                    log(f"{progress_at - began:.0f} s: {len(ledger.entries)} requests, {errors} errors, "
                        f"platform RSS {samples[-1][1] if samples else '?'} MiB")
        load_ended = time.monotonic() - began
        stop.set()
        sampler.join()
        log("checking what was written")
        statuses = ended(load.submitted, wait_s=120)
        lost = lost_points(load.workspace, load.ingest_runs.finish())
        load.service.delete()

    entries = ledger.entries
    start, end = (warmup, warmup + window), (duration - window, duration)
    requests, errors = defaultdict(int), defaultdict(int)
    error_samples: list[str] = []
    for kind, _, _, error in entries:
        requests[kind] += 1
        if error:
            errors[kind] += 1
            if len(error_samples) < 10:
                error_samples.append(f"{kind}: {error}")
    rss_start, rss_end = median_in(samples, *start), median_in(samples, *end)
    growth = (rss_end / rss_start - 1) if rss_start and rss_end else None
    judged = duration >= GROWTH_JUDGED_FROM_S
    not_completed = sum(1 for status in statuses.values() if status != "Completed")
    ok = (not errors and not lost and not not_completed
          and (not judged or (growth is not None and growth < GROWTH_LIMIT)))
    return {
        "benchmark": "soak", "duration_s": duration, "load_ended_s": round(load_ended, 1), "seed": seed,
        "rates_per_s": rates, "warmup_s": warmup, "window_s": window,
        "requests": dict(requests), "errors": {kind: errors.get(kind, 0) for kind in requests},
        "errors_total": sum(errors.values()), "error_samples": error_samples,
        "latency": {kind: latency_figures(entries, kind, start, end) for kind in rates if rates[kind] > 0},
        "runs_submitted": len(statuses), "runs_not_completed": not_completed,
        "points_acknowledged": sum(entry["steps"] for entry in load.ingest_runs.done + load.ingest_runs.free),
        "points_lost": lost,
        "rss_mib": {"start_window": rss_start, "end_window": rss_end,
                    "max": max((rss for _, rss, _ in samples), default=None),
                    "growth_pct": round(growth * 100, 1) if growth is not None else None,
                    "growth_judged": judged, "children_end": samples[-1][2] if samples else None},
        "rss_samples": samples, "ok": ok,
    }


def parse_rates(text: str) -> dict[str, float]:
    rates = dict(DEFAULT_RATES)
    for item in filter(None, text.split(",")):
        kind, _, value = item.partition("=")
        if kind not in DEFAULT_RATES:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r}: one of {', '.join(DEFAULT_RATES)}")
        rates[kind] = float(value)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=MAX_DURATION_S,
                        help=f"seconds of load, at most {MAX_DURATION_S:.0f}")
    parser.add_argument("--rate", type=parse_rates, default=dict(DEFAULT_RATES),
                        help="requests per second per kind, e.g. ingest=4,score=10 (the others keep their default)")
    parser.add_argument("--seed", type=int, default=42)
    arguments = parser.parse_args()
    if not 0 < arguments.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be between 0 and {MAX_DURATION_S:.0f} seconds")
    result = run_soak(arguments.duration, arguments.rate, arguments.seed)
    for kind, figures in result["latency"].items():
        log(f"{kind:>8}: {result['requests'].get(kind, 0)} requests, {result['errors'].get(kind, 0)} errors, "
            f"p50/p99 {figures['start_p50_ms']}/{figures['start_p99_ms']} ms at the start, "
            f"{figures['end_p50_ms']}/{figures['end_p99_ms']} ms at the end")
    log(f"platform RSS {result['rss_mib']}")
    for sample in result["error_samples"]:
        log(f"ERROR {sample}")
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
