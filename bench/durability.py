"""Crash consistency: SDK writers against a local platform that is SIGKILLed and restarted K times.

N writer processes use the real SDK (metrics through the buffered sender, outputs through presigned
PUTs, model versions through Model.register) and append every write the platform acknowledged to a
journal of their own. Meanwhile the platform is killed with SIGKILL at random moments and restarted on
the same port and NIMBUS_HOME; each kill leaves the SQLite file checked with `PRAGMA integrity_check`
before the restart. A script run and a scoring host live through the kills too: the run's process
must be adopted by each restart (one more run, whose process dies while the platform is down, must
be ended), and the scoring host left behind must be ended and replaced.

At the end every acknowledged write must be stored exactly once, every acknowledged file must have the
bytes (sha256) that were sent, and no temporary file may be left or be listed as a blob. The figures
are the last line of stdout, one JSON object; the exit status is 1 on any loss or inconsistency.

    .venv/bin/python bench/durability.py [--writers 4] [--kills 5] [--seconds 60] [--seed N]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import psutil  # noqa: E402

from bench._platform import NIMBUS_PYTHON, REPO, emit, free_port, http_status, log  # noqa: E402
from nimbus import Experiment, Model, Run, ScriptRunConfig, Workspace  # noqa: E402
from nimbus.client import ApiClient  # noqa: E402
from nimbus.exceptions import NimbusError, ServiceUnavailableError  # noqa: E402
from nimbus.webservice import InferenceConfig, Webservice, deploy  # noqa: E402

WRITER_ATTEMPTS = 10  # the SDK's retries of one call span ~40 s of back-off: longer than a restart
VERIFY_THREADS = 6
WRITE_PATIENCE_S = 120.0  # a writer retries one write this long before it gives it up (not acknowledged)
RUN_SCRIPT = "import time\nwhile True:\n    time.sleep(0.2)\n"
SCORE_SCRIPT = "import os\n\ndef init():\n    pass\n\ndef run(raw_data):\n    return {'pid': os.getpid()}\n"


# --- the platform -----------------------------------------------------------------------------------
class Platform:
    """`python -m chalicelib.local` on one port and home across restarts; killed or stopped by its pid."""

    def __init__(self, home: Path, port: int):
        self.home, self.port = home, port
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until the API answers; returns the seconds that took."""
        env = {**os.environ, "NIMBUS_HOME": str(self.home)}
        env.pop("NIMBUS_ENVS_DIR", None)
        env.pop("NIMBUS_TOKEN", None)
        python = str(NIMBUS_PYTHON if NIMBUS_PYTHON.exists() else sys.executable)
        began = time.monotonic()
        with open(self.home.parent / "server.log", "ab") as output:
            self.process = subprocess.Popen([python, "-m", "chalicelib.local", "--home", str(self.home),
                                             "--port", str(self.port)], cwd=REPO, env=env, stdout=output,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the platform exited with status {self.process.returncode}; see "
                                   f"{self.home.parent / 'server.log'}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                token = json.loads((self.home / "credentials").read_text())["token"]
                if http_status(f"{self.url}/v1/whoami", {"Authorization": f"Bearer {token}"}) == 200:
                    return time.monotonic() - began
            time.sleep(0.05)
        raise RuntimeError(f"the platform did not answer within {timeout:.0f} s")

    @property
    def token(self) -> str:
        return json.loads((self.home / "credentials").read_text())["token"]

    def kill(self) -> None:
        """SIGKILL to the platform's own process only: what it started is left as a crash leaves it."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def integrity(db: Path) -> str:
    """`PRAGMA integrity_check` of the store as the crash left it (the next open replays its WAL)."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
        return "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check"))


# --- a writer (its own process) -----------------------------------------------------------------------
def write(index: int, url: str, token: str, journal: Path, stop_file: Path, seed: int) -> None:
    """Metrics, outputs and model versions until `stop_file` exists; each acknowledged one journaled (fsynced)."""
    rng = random.Random(seed * 1000 + index)
    workspace = Workspace("default", client=ApiClient(url, token, attempts=WRITER_ATTEMPTS))
    experiment, scratch = Experiment(workspace, f"durability-w{index}"), journal.parent / f"writer-{index}-files"
    scratch.mkdir(exist_ok=True)
    model_name = f"durable-w{index}"

    def patiently(call):
        """The call's answer, retried while the platform restarts; None once it was given up."""
        deadline = time.monotonic() + WRITE_PATIENCE_S
        while True:
            try:
                return call()
            except ServiceUnavailableError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.5)
            except NimbusError as error:  # a 5xx answer while shutting down is not an acknowledgement either
                if getattr(error, "status", 500) < 500 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    with open(journal, "a", buffering=1) as out:
        def acknowledged(entry: dict) -> None:
            out.write(json.dumps(entry) + "\n")
            out.flush()
            os.fsync(out.fileno())

        while not stop_file.exists():
            run = patiently(experiment.start_logging)
            if run is None:
                continue
            step = 0
            for cycle in range(5):
                if stop_file.exists():
                    break
                first, count = step, rng.randint(10, 200)
                for s in range(first, first + count):
                    run.log("loss", metric_value(index, s), step=s)
                step += count
                try:
                    run.flush(timeout=WRITE_PATIENCE_S)
                    acknowledged({"kind": "metrics", "run": run.id, "name": "loss", "first": first, "count": count,
                                  "writer": index})
                except NimbusError:
                    pass  # given up by the sender: not acknowledged
                data = rng.randbytes(rng.choice([0, 1, 4096, 65536, 256 << 10, 1 << 20]) + rng.randint(0, 999))
                name = f"outputs/c{cycle}.bin"
                if patiently(lambda: run.upload_file(name, io.BytesIO(data), show_progress=False)) is not None:
                    acknowledged({"kind": "output", "run": run.id, "path": name, "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest(), "writer": index})
                if cycle % 2 == 0:
                    write_id = f"w{index}-{rng.getrandbits(64):016x}"
                    model_file = scratch / "model.bin"
                    model_bytes = rng.randbytes(rng.randint(1, 200_000))
                    model_file.write_bytes(model_bytes)
                    model = patiently(lambda: Model.register(workspace, model_name, model_file,
                                                             tags={"write_id": write_id}, show_progress=False))
                    if model is not None:
                        acknowledged({"kind": "model", "name": model_name, "version": model.version,
                                      "write_id": write_id, "sha256": hashlib.sha256(model_bytes).hexdigest(),
                                      "writer": index})
            patiently(run.complete)


def metric_value(writer: int, step: int) -> float:
    return writer * 1_000_000 + step + 0.5


# --- the check ----------------------------------------------------------------------------------------
def verify(url: str, token: str, journals: list[Path], blobs_root: Path) -> dict:

    workspace = Workspace("default", client=ApiClient(url, token))
    entries = [json.loads(line) for journal in journals for line in journal.read_text().splitlines() if line.strip()]
    figures = Counter()
    problems: list[str] = []
    histories: dict[tuple[str, str], Counter] = {}
    outputs: dict[str, set[str]] = {}

    for entry in entries:
        kind = entry["kind"]
        figures[f"acknowledged_{kind}"] += 1
        if kind == "metrics":
            key = (entry["run"], entry["name"])
            if key not in histories:
                history = Run(workspace, entry["run"]).get_metric_history(entry["name"])
                histories[key] = Counter(history["steps"])
                for step, value in zip(history["steps"], history["values"]):
                    if value != metric_value(entry["writer"], step):
                        problems.append(f"run {entry['run']}: step {step} holds {value}")
            steps = histories[key]
            for step in range(entry["first"], entry["first"] + entry["count"]):
                figures["acknowledged_points"] += 1
                if steps[step] == 0:
                    figures["lost"] += 1
                    problems.append(f"run {entry['run']}: point {step} lost")
                elif steps[step] > 1:
                    figures["duplicated"] += 1
                    problems.append(f"run {entry['run']}: point {step} stored {steps[step]} times")
    def check_file(entry: dict) -> tuple[str, str] | None:
        """(figure, problem) when an acknowledged output or model file is missing or not its bytes."""
        if entry["kind"] == "output":
            run = Run(workspace, entry["run"])
            if entry["path"] not in outputs[entry["run"]]:
                return "lost", f"run {entry['run']}: output {entry['path']} lost"
            with tempfile.TemporaryDirectory() as folder:
                digest = hashlib.sha256(Path(run.download_file(entry["path"], folder)).read_bytes()).hexdigest()
            what = f"run {entry['run']}: output {entry['path']}"
        else:
            model = Model(workspace, entry["name"], entry["version"])
            if model.tags.get("write_id") != entry["write_id"]:
                return "lost", f"model {entry['name']}:{entry['version']} is not write {entry['write_id']}"
            with tempfile.TemporaryDirectory() as folder:
                digest = hashlib.sha256(Path(model.download(folder, exist_ok=True, show_progress=False))
                                        .read_bytes()).hexdigest()
            what = f"model {entry['name']}:{entry['version']}"
        return None if digest == entry["sha256"] else ("torn_blobs", f"{what} has other bytes")

    files = [e for e in entries if e["kind"] in ("output", "model")]
    for run_id in {e["run"] for e in files if e["kind"] == "output"}:
        outputs[run_id] = set(Run(workspace, run_id).get_file_names())
    with ThreadPoolExecutor(VERIFY_THREADS) as pool:
        for found in pool.map(check_file, files):
            if found is not None:
                figures[found[0]] += 1
                problems.append(found[1])
    # Each acknowledged registration is one version: a write_id seen twice is a duplicate.
    written = Counter()
    for name in sorted({e["name"] for e in entries if e["kind"] == "model"}):
        for model in Model.list(workspace, name=name, latest=False):
            written[model.tags.get("write_id")] += 1
    acknowledged_ids = {e["write_id"] for e in entries if e["kind"] == "model"}
    for write_id, count in written.items():
        if write_id in acknowledged_ids and count > 1:
            figures["duplicated"] += count - 1
            problems.append(f"model write {write_id} stored {count} times")
    figures["unacknowledged_versions"] = sum(1 for w in written if w not in acknowledged_ids)
    temporary = [p for p in blobs_root.rglob("*") if p.is_file() and ".tmp" in p.name]
    figures["temp_files_left"] = len(temporary)
    return {"figures": figures, "problems": problems}


# --- what a kill leaves running -----------------------------------------------------------------------
class Orphans:
    """A script run that must be adopted by every restart, one that must be ended (its process dies while
    the platform is down), and a scoring host that must be ended and replaced."""

    def __init__(self, platform: Platform, workspace, scratch: Path):

        self.platform, self.workspace = platform, workspace
        source = scratch / "run-src"
        source.mkdir()
        (source / "loop.py").write_text(RUN_SCRIPT)
        experiment = Experiment(workspace, "durability-orphans")
        self.kept = experiment.submit(ScriptRunConfig(source_directory=source, script="loop.py"))
        self.doomed = experiment.submit(ScriptRunConfig(source_directory=source, script="loop.py"))
        score = scratch / "score-src"
        score.mkdir()
        (score / "score.py").write_text(SCORE_SCRIPT)
        (scratch / "weights.bin").write_bytes(b"weights")
        model = Model.register(workspace, "durability-scorer", scratch / "weights.bin", show_progress=False)
        deploy(workspace, "blue", [model], InferenceConfig(score / "score.py"), endpoint="durable",
               show_progress=False)
        self.service = Webservice(workspace, "durable")
        self.figures = Counter()
        self.problems: list[str] = []
        self.kept_pid = self._job_pid(self.kept.id, wait=60)
        self.doomed_pid: int | None = self._job_pid(self.doomed.id, wait=60)
        self.host_pid = self._score_pid(wait=30)

    # --- around one kill ----------------------------------------------------------------------------
    def while_down(self, kill_number: int) -> None:
        """The first kill also loses the second run's process: no platform sees it die."""
        if kill_number == 1 and self.doomed_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.doomed_pid, signal.SIGKILL)

    def after_restart(self, kill_number: int) -> None:
        # The kept run's process lived through the kill: the new platform must own it, the run still Running.
        if psutil.pid_exists(self.kept_pid) and self.kept.get_details()["status"] == "Running":
            self.figures["runs_adopted"] += 1
        else:
            self.problems.append(f"kill {kill_number}: run {self.kept.id} was not adopted")
        if kill_number == 1:
            details = self._settled(self.doomed, 30)
            if details["status"] == "Failed" and "died" in (details.get("error") or {}).get("message", ""):
                self.figures["runs_ended"] += 1
            else:
                self.problems.append(f"run {self.doomed.id} whose process died is {details['status']}")
        # The host the killed platform left holds its port until the new platform ends it and starts its own.
        old, deadline = self.host_pid, time.monotonic() + 60
        while time.monotonic() < deadline and (alive(old) or self._score_pid(wait=0) in (None, old)):
            time.sleep(0.2)
        new = self._score_pid(wait=0)
        if alive(old):
            self.figures["hosts_left_unsupervised"] += 1
            self.problems.append(f"kill {kill_number}: scoring host {old} left running")
        elif new is None:
            self.problems.append(f"kill {kill_number}: the endpoint does not score after the restart")
        else:
            self.figures["hosts_ended_and_replaced"] += 1
            self.host_pid = new

    def finish(self) -> None:
        """Cancelling the kept run stops its process only if the last platform really supervises it."""
        self.kept.cancel()
        deadline = time.monotonic() + 20
        while alive(self.kept_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(self.kept_pid):
            self.problems.append(f"run {self.kept.id}: canceled, but its process {self.kept_pid} still runs")
        self.service.delete()

    # --- helpers --------------------------------------------------------------------------------------
    def _job_pid(self, run_id: str, wait: float) -> int:
        record, deadline = self.platform.home / "jobs" / run_id / "job.json", time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                return int(json.loads(record.read_text())["pid"])
            time.sleep(0.1)
        raise RuntimeError(f"run {run_id} did not start within {wait:.0f} s")

    def _score_pid(self, wait: float) -> int | None:
        deadline = time.monotonic() + wait
        while True:
            try:
                return int(self.service.run({})["pid"])
            except (NimbusError, KeyError, TypeError, ValueError):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.2)

    @staticmethod
    def _settled(run, wait: float) -> dict:
        deadline = time.monotonic() + wait
        while True:
            details = run.get_details()
            if details["status"] in ("Completed", "Failed", "Canceled") or time.monotonic() > deadline:
                return details
            time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def leftover_processes(home: Path, grace_s: float = 10.0) -> list[str]:
    """Processes still working in the platform's home once it stopped (nothing should be), after a grace
    period for those that are exiting; each as "pid command line"."""
    deadline = time.monotonic() + grace_s
    while True:
        found = []
        for process in psutil.process_iter(["pid", "cwd", "cmdline", "status"]):
            cwd = process.info.get("cwd")
            if cwd and Path(cwd).is_relative_to(home) and process.info.get("status") != psutil.STATUS_ZOMBIE:
                found.append(f"{process.info['pid']} {' '.join(process.info.get('cmdline') or [])}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# --- the benchmark ------------------------------------------------------------------------------------
def kill_moments(kills: int, seconds: float, rng: random.Random) -> list[float]:
    """K moments spread over the run, each at a random point of its own slice (after a first calm slice)."""
    slice_s = seconds / (kills + 1)
    return [slice_s * (i + 1) + rng.uniform(-slice_s / 3, slice_s / 3) for i in range(kills)]


def run_benchmark(writers: int, kills: int, seconds: float, seed: int, keep: bool = False) -> dict:

    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="nimbus-durability-"))
    home, stop_file = root / "home", root / "stop"
    platform = Platform(home, free_port())
    figures: Counter = Counter()
    problems: list[str] = []
    processes: list[subprocess.Popen] = []
    integrity_results: list[str] = []
    restart_s: list[float] = []
    try:
        log(f"platform at {platform.url}, home {home}")
        platform.start()
        token = platform.token
        workspace = Workspace("default", client=ApiClient(platform.url, token, attempts=WRITER_ATTEMPTS))
        orphans = Orphans(platform, workspace, root)
        journals = [root / f"journal-{i}.jsonl" for i in range(writers)]
        for index, journal in enumerate(journals):
            processes.append(subprocess.Popen(
                [sys.executable, __file__, "--writer", str(index), "--url", platform.url, "--token", token,
                 "--journal", str(journal), "--stop-file", str(stop_file), "--seed", str(seed)],
                cwd=REPO, env={**os.environ, "NIMBUS_HOME": str(root / f"writer-{index}")},
                stdin=subprocess.DEVNULL, stdout=open(root / f"writer-{index}.log", "wb"), stderr=subprocess.STDOUT))
        began = time.monotonic()
        for number, moment in enumerate(kill_moments(kills, seconds, rng), start=1):
            time.sleep(max(0.0, began + moment - time.monotonic()))
            log(f"kill {number}/{kills} (SIGKILL) at {time.monotonic() - began:.1f} s")
            platform.kill()
            integrity_results.append(integrity(home / "nimbus.db"))
            orphans.while_down(number)
            restart_s.append(platform.start())
            orphans.after_restart(number)
            figures["kills"] += 1
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        stop_file.touch()
        log("writers finishing their last writes")
        for process in processes:
            try:
                process.wait(WRITE_PATIENCE_S + 60)
            except subprocess.TimeoutExpired:
                process.kill()
                problems.append(f"writer {process.pid} did not finish")
            if process.returncode not in (0, None):
                problems.append(f"writer {process.pid} exited with status {process.returncode}; see {root}")
        log("comparing every acknowledged write with what is stored")
        checked = verify(platform.url, token, journals, home / "blobs")
        figures.update(checked["figures"])
        problems += checked["problems"]
        orphans.finish()
        figures.update(orphans.figures)
        problems += orphans.problems
        platform.stop()
        integrity_results.append(integrity(home / "nimbus.db"))
        left = leftover_processes(home)
        figures["processes_left_after_stop"] = len(left)
        if left:
            problems.append(f"processes still running in the home after the platform stopped: {left}")
            for entry in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.split()[0]), signal.SIGKILL)
        figures["temp_files_left"] = sum(1 for p in (home / "blobs").rglob("*") if p.is_file() and ".tmp" in p.name)
    finally:
        stop_file.touch()
        for process in processes:
            if process.poll() is None:
                process.kill()
        platform.stop()
        if not keep and not problems:
            shutil.rmtree(root, ignore_errors=True)
    bad_integrity = [r for r in integrity_results if r != "ok"]
    if bad_integrity:
        problems.append(f"integrity_check: {bad_integrity}")
    for name in ("lost", "duplicated", "torn_blobs", "temp_files_left", "hosts_left_unsupervised"):
        figures.setdefault(name, 0)
    if figures["temp_files_left"]:
        problems.append(f"{figures['temp_files_left']} temporary files left in the blob store")
    return {
        "benchmark": "durability", "writers": writers, "kills": figures["kills"], "seconds": seconds, "seed": seed,
        "acknowledged_metric_batches": figures["acknowledged_metrics"],
        "acknowledged_points": figures["acknowledged_points"],
        "acknowledged_outputs": figures["acknowledged_output"], "acknowledged_models": figures["acknowledged_model"],
        "lost": figures["lost"], "duplicated": figures["duplicated"], "torn_blobs": figures["torn_blobs"],
        "integrity_checks": len(integrity_results), "integrity_ok": len(integrity_results) - len(bad_integrity),
        "temp_files_left": figures["temp_files_left"],
        "unacknowledged_versions": figures["unacknowledged_versions"],
        "runs_adopted": figures["runs_adopted"], "runs_ended": figures["runs_ended"],
        "hosts_ended_and_replaced": figures["hosts_ended_and_replaced"],
        "hosts_left_unsupervised": figures["hosts_left_unsupervised"],
        "processes_left_after_stop": figures["processes_left_after_stop"],
        "restart_p50_s": round(sorted(restart_s)[len(restart_s) // 2], 2) if restart_s else None,
        "problems": problems[:20], "ok": not problems,
        **({"kept": str(root)} if problems or keep else {}),
    }


def print_table(result: dict) -> None:
    rows = [(k, v) for k, v in result.items() if k not in ("problems", "benchmark")]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows), file=sys.stderr)
    for problem in result["problems"]:
        print(f"PROBLEM: {problem}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the writers write")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (kept anyway on a problem)")
    parser.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.writer is not None:
        write(arguments.writer, arguments.url, arguments.token, arguments.journal, arguments.stop_file, arguments.seed)
        return 0
    result = run_benchmark(arguments.writers, arguments.kills, arguments.seconds, arguments.seed, arguments.keep)
    print_table(result)
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
