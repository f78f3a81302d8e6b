"""Scoring: the local scoring host against `mlflow models serve`, on the same iris model.

    .venv/bin/python bench/score.py [--baseline] [--requests N] [--seconds S] [--clients C] [--starts K]

Trains an iris LogisticRegression once (pickled, as examples/iris/train.py does), prepares a
deployment folder for `python -m chalicelib.scoring.host` with examples/iris/score.py, and measures:
cold start (process start until the first 200 answer, median of K starts: forked from the platform's
prewarmed zygote as the local platform does, and from a fresh interpreter), N sequential single-row
requests on one keep-alive connection (p50/p99), C concurrent keep-alive clients for S seconds
(requests/s, p99) and the server's resident memory (children included). It also times the Lambda
handler's cold start: a fresh interpreter importing it and answering its first event (median of K).
With --baseline the same model, saved with mlflow.sklearn in bench/.venv-mlflow, is served by
`mlflow models serve --env-manager local` (uvicorn, 1 worker) and measured the same way.
The figures are the last line of stdout, one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _platform import REPO, _tail, emit, free_port, log, p50, p99, ratio, rounded, stop  # noqa: E402

KEY = "nmbk_bench"
ROW = [5.1, 3.5, 1.4, 0.2]
NIMBUS_BODY = json.dumps({"data": [ROW]}).encode()
MLFLOW_BODY = json.dumps({"inputs": [ROW]}).encode()
PYTHON = sys.executable


# --- the model and the deployment folder -----------------------------------------------------------
def train(work: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    path = work / "model.pkl"
    path.write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(features, labels)))
    return path


def nimbus_folder(work: Path, model: Path) -> Path:
    """What the supervisor writes for a deployment (chalicelib/hosting/local_hosts.py)."""
    folder = work / "deployment"
    (folder / "models" / "iris" / "1").mkdir(parents=True)
    shutil.copy(model, folder / "models" / "iris" / "1" / "model.pkl")
    (folder / "models" / "models.json").write_text(json.dumps({"iris": {"1": "model.pkl"}}))
    shutil.copytree(REPO / "examples" / "iris", folder / "source",
                    ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    (folder / "keys.json").write_text(json.dumps({"hashes": [hashlib.sha256(KEY.encode()).hexdigest()]}))
    (folder / "host.json").write_text(json.dumps({
        "workspace": "bench", "endpoint": "iris", "deployment": "blue", "revision": 1, "entry_script": "score.py",
        "timeout_s": 60, "capture_rate": 0.0, "capture_prefix": "", "keys_file": str(folder / "keys.json")}))
    return folder


# --- one server, measured the same way on both sides -----------------------------------------------
class Target:
    def __init__(self, name: str, command: list[str], path: str, body: bytes, headers: dict, env: dict,
                 log_path: Path, cwd: Path):
        self.name, self.command, self.path, self.body, self.headers = name, command, path, body, headers
        self.env, self.log_path, self.cwd = env, log_path, cwd

    def start(self, port: int) -> tuple[subprocess.Popen, float]:
        """Start the server; returns it and the seconds until its first 200 answer."""
        command = [part.replace("{port}", str(port)) for part in self.command]
        with open(self.log_path, "ab") as output:
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=output, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = started + 180
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {process.returncode}:\n{_tail(self.log_path)}")
            if self.status(port) == 200:
                return process, time.perf_counter() - started
            time.sleep(0.005)
        stop(process)
        raise RuntimeError(f"{self.name} did not answer within 180 s:\n{_tail(self.log_path)}")

    def status(self, port: int) -> int | None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("POST", self.path, self.body, self.headers)
            response = connection.getresponse()
            response.read()
            return response.status
        except OSError:
            return None
        finally:
            connection.close()


def cold_starts(target: Target, starts: int) -> list[float]:
    times = []
    for attempt in range(starts):
        process, seconds = target.start(free_port())
        stop(process)
        times.append(seconds)
        log(f"{target.name}: cold start {attempt + 1}/{starts}: {seconds:.3f} s")
    return times


def sequential(port: int, target: Target, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples = []
    for index in range(count + 50):  # 50 untimed warm-up requests
        started = time.perf_counter()
        connection.request("POST", target.path, target.body, target.headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{target.name} answered {response.status}")
        if index >= 50:
            samples.append((time.perf_counter() - started) * 1000.0)
    connection.close()
    return samples


def concurrent(port: int, target: Target, clients: int, seconds: float) -> tuple[float, list[float]]:
    """`clients` threads, each with its own keep-alive connection, for `seconds`; (requests/s, latencies)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    begin = threading.Barrier(clients + 1)
    end_at = [0.0]

    def client(mine: list[float]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        begin.wait()
        try:
            while True:
                started = time.perf_counter()
                if started >= end_at[0]:
                    return
                connection.request("POST", target.path, target.body, target.headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(str(response.status))
                    return
                mine.append((time.perf_counter() - started) * 1000.0)
        except OSError as err:
            failures.append(repr(err))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    end_at[0] = time.perf_counter() + seconds
    begin.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{target.name}: {len(failures)} client(s) failed, first: {failures[0]}")
    merged = [sample for mine in latencies for sample in mine]
    return len(merged) / elapsed, merged


def resident_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / (1024 * 1024)


def measure(target: Target, args) -> dict:
    starts = cold_starts(target, args.starts)
    process, _ = target.start(port := free_port())
    try:
        log(f"{target.name}: {args.requests:,} sequential requests")
        samples = sequential(port, target, args.requests)
        log(f"{target.name}: {args.clients} concurrent clients for {args.seconds:g} s")
        rps, latencies = concurrent(port, target, args.clients, args.seconds)
        memory = resident_mb(process.pid)
    finally:
        stop(process)
    return {"rps": round(rps), "p50_ms": rounded(p50(samples)), "p99_ms": rounded(p99(samples)),
            "concurrent_p50_ms": rounded(p50(latencies)), "concurrent_p99_ms": rounded(p99(latencies)),
            "cold_start_s": rounded(p50(starts)), "rss_mb": round(memory, 1)}


# --- the two sides ---------------------------------------------------------------------------------
def nimbus_target(work: Path, folder: Path) -> Target:
    env = {**os.environ, "NIMBUS_BACKEND": "local", "NIMBUS_HOME": str(work / "home"), "PYTHONUNBUFFERED": "1"}
    return Target("nimbus", [PYTHON, "-m", "chalicelib.scoring.host", "--dir", str(folder), "--port", "{port}"],
                  "/score", NIMBUS_BODY, {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
                  env, work / "nimbus-host.log", REPO)


def prewarmed_cold_starts(work: Path, folder: Path, starts: int) -> dict:
    """Hosts as the local platform starts them: forked from its zygote. The first start teaches the
    zygote what the entry script imports (a fresh-interpreter start); the next ones are forks."""
    from chalicelib.hosting.host_spawner import HostSpawner

    env = {**os.environ, "NIMBUS_BACKEND": "local", "NIMBUS_HOME": str(work / "home"), "PYTHONUNBUFFERED": "1"}
    spawner = HostSpawner(env, work / "zygote")
    target = nimbus_target(work, folder)
    times = []
    try:
        for attempt in range(starts + 1):
            copy = work / f"prewarmed-{attempt}"
            shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.json.tmp", "ready.json", "failed.json",
                                                                  "exit.json", "modules.json"))
            started = time.perf_counter()
            process = spawner.spawn(copy)
            while not (copy / "ready.json").exists():
                if process.poll() is not None or time.perf_counter() - started > 180:
                    raise RuntimeError(f"prewarmed host did not start:\n{_tail(copy / 'host.log')}")
                time.sleep(0.002)
            port = json.loads((copy / "ready.json").read_text())["port"]
            while target.status(port) != 200:
                time.sleep(0.002)
            seconds = time.perf_counter() - started
            process.send_signal(signal.SIGTERM)
            process.wait(15)
            if attempt == 0:
                first = seconds
                spawner.learn(copy)
                for thread in threading.enumerate():
                    if thread.name == "zygote-preload":
                        thread.join(180)
            else:
                times.append(seconds)
            log(f"nimbus (zygote): start {attempt + 1}/{starts + 1}: {seconds:.3f} s")
    finally:
        spawner.close()
    return {"cold_start_s": rounded(p50(times)), "cold_start_first_s": rounded(first)}


LAMBDA_PROBE = """
import json, sys, time
started = time.perf_counter()
from chalicelib.scoring import lambda_handler
imported = time.perf_counter()
answer = lambda_handler.handler({"body": sys.argv[1], "isBase64Encoded": False,
                                 "headers": {"content-type": "application/json"}}, None)
finished = time.perf_counter()
assert answer["statusCode"] == 200, answer
print(json.dumps({"import_s": imported - started, "total_s": finished - started,
                  "init_s": lambda_handler.sandbox().cold_start_s}))
"""


def lambda_cold_starts(work: Path, folder: Path, starts: int) -> dict:
    """The handler in a fresh interpreter: import, init (models already in NIMBUS_MODEL_DIR: the S3
    download is not timed), one scored event with its telemetry written (to SQLite here)."""
    env = {**os.environ, "NIMBUS_BACKEND": "local", "NIMBUS_HOME": str(work / "lambda-home"),
           "NIMBUS_ENTRY_SCRIPT": "score.py", "NIMBUS_SOURCE_DIR": str(folder / "source"),
           "NIMBUS_MODEL_DIR": str(folder / "models"), "NIMBUS_ENDPOINT_WORKSPACE": "bench", "NIMBUS_ENDPOINT": "iris",
           "NIMBUS_DEPLOYMENT": "blue", "NIMBUS_REVISION": "1", "POWERTOOLS_METRICS_DISABLED": "false"}
    env.pop("NIMBUS_MODEL_SOURCES", None)
    runs = []
    for attempt in range(starts):
        started = time.perf_counter()
        done = subprocess.run([PYTHON, "-c", LAMBDA_PROBE, NIMBUS_BODY.decode()], cwd=REPO, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"the Lambda handler probe failed:\n{done.stderr[-2000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures["process_s"] = wall
        runs.append(figures)
        log(f"lambda handler: cold start {attempt + 1}/{starts}: {figures['total_s']:.3f} s in-process, "
            f"{wall:.3f} s wall")
    return {"nimbus_lambda_cold_start_s": rounded(p50([r["total_s"] for r in runs])),
            "nimbus_lambda_cold_start_process_s": rounded(p50([r["process_s"] for r in runs])),
            "nimbus_lambda_import_s": rounded(p50([r["import_s"] for r in runs])),
            "nimbus_lambda_init_s": rounded(p50([r["init_s"] for r in runs]))}


MLFLOW_SAVE = """
import pickle, sys
import mlflow.sklearn
with open(sys.argv[1], "rb") as handle:
    model = pickle.load(handle)
mlflow.sklearn.save_model(model, sys.argv[2])
"""


def mlflow_target(work: Path, model: Path) -> Target:
    from mlflow_baseline import VENV, ensure_venv

    python = ensure_venv()
    saved = work / "mlflow-model"
    log("mlflow: saving the model with mlflow.sklearn")
    subprocess.run([str(python), "-c", MLFLOW_SAVE, str(model), str(saved)], check=True, cwd=work,
                   stdout=sys.stderr, stderr=sys.stderr)
    # MLflow starts the server with `bash -c "exec uvicorn ..."`: its venv's bin must be on PATH (as when activated).
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "VIRTUAL_ENV": str(VENV), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return Target("mlflow", [str(VENV / "bin" / "mlflow"), "models", "serve", "-m", str(saved), "--env-manager",
                             "local", "--host", "127.0.0.1", "--port", "{port}"],
                  "/invocations", MLFLOW_BODY, {"Content-Type": "application/json"}, env, work / "mlflow.log", work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", action="store_true", help="measure `mlflow models serve` too")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests (default 2000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the concurrent load (default 10)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--starts", type=int, default=10, help="cold starts to take the median of (default 10)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nimbus-bench-score-"))
    try:
        result: dict = {"load_avg_1m_at_start": round(os.getloadavg()[0], 2), "requests": args.requests,
                        "clients": args.clients, "seconds": args.seconds, "starts": args.starts}
        log("training the iris model")
        model = train(work)
        folder = nimbus_folder(work, model)
        result["nimbus"] = measure(nimbus_target(work, folder), args)
        # The platform forks hosts from its zygote: that start is Nimbus's cold start; a fresh
        # interpreter's (the first start of a deployment whose imports the zygote has not seen) is kept.
        result["nimbus"]["cold_start_fresh_s"] = result["nimbus"]["cold_start_s"]
        prewarmed = prewarmed_cold_starts(work, folder, args.starts)
        result["nimbus"]["cold_start_s"] = prewarmed["cold_start_s"]
        result["nimbus"]["cold_start_zygote_first_s"] = prewarmed["cold_start_first_s"]
        result.update(lambda_cold_starts(work, folder, args.starts))
        if args.baseline:
            result["mlflow"] = measure(mlflow_target(work, model), args)
            result["rps_vs_mlflow"] = ratio(result["nimbus"]["rps"], result["mlflow"]["rps"])
            result["p50_speedup_vs_mlflow"] = ratio(result["mlflow"]["p50_ms"], result["nimbus"]["p50_ms"])
            result["cold_start_speedup_vs_mlflow"] = ratio(result["mlflow"]["cold_start_s"],
                                                           result["nimbus"]["cold_start_s"])
        emit(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # finally: clean up the temporary folder
    main()
