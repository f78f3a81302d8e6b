"""A Batch job run again after its host went away restarts its run: the job's container command, run
locally twice against the platform as Batch would run attempt 1 (killed with its host) and attempt 2."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chalicelib.compute.batch import spec as batch_spec
from nimbus.experiment import Run
from tests.e2e.test_batch_container_command import queued_batch_run

TRAIN = """\
import os, time
from pathlib import Path
from nimbus import Run

attempt = os.environ["AWS_BATCH_JOB_ATTEMPT"]
run = Run.get_context()
run.log("attempt", float(attempt))
run.flush()
print(f"attempt {attempt} started", flush=True)
Path(f"pid-{attempt}").write_text(str(os.getpid()))
if attempt == "1":
    time.sleep(120)  # its host goes away meanwhile
Path("outputs").mkdir(exist_ok=True)
Path("outputs/model.txt").write_text(f"weights of attempt {attempt}")
"""


def start_attempt(argv, env, host, job_dir: Path, attempt: int) -> subprocess.Popen:
    job_dir.mkdir()
    return subprocess.Popen(argv, env={**host, **env, "AWS_BATCH_JOB_ATTEMPT": str(attempt)}, cwd=job_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return int(path.read_text())
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def test_a_second_attempt_restarts_the_run_and_completes_it(platform, workspace, tmp_path):
    # Given a Queued run of a batch target, and the container command of its job
    run, token, spec = queued_batch_run(platform, workspace, tmp_path, TRAIN, "batch-retry")
    argv, env = batch_spec.container_command_env(spec, platform.url, token)
    host = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    path = f"/v1/workspaces/default/runs/{run['id']}"

    # When attempt 1 runs the script, and its host goes away (runner and script killed outright)
    first = start_attempt(argv, env, host, tmp_path / "attempt-1", 1)
    script_pid = wait_for(tmp_path / "attempt-1" / "code" / "pid-1")
    held = workspace.client.get(path)
    assert held["status"] == "Running" and held["attempt"] == 1
    deadline = time.monotonic() + 30
    while "attempt 1 started" not in Run(workspace, run["id"]).get_logs("stdout")["text"]:
        assert time.monotonic() < deadline, "attempt 1's log never arrived"
        time.sleep(0.2)
    first.kill()
    first.wait(10)
    os.killpg(script_pid, signal.SIGKILL)

    # and Batch runs attempt 2 in a new container
    second = start_attempt(argv, env, host, tmp_path / "attempt-2", 2)
    output, _ = second.communicate(timeout=180)

    # Then attempt 2 restarted the run and completed it; what attempt 1 logged stays
    assert second.returncode == 0, output
    details = workspace.client.get(path)
    assert details["status"] == "Completed", details.get("error")
    assert details["attempt"] == 2
    assert [a["attempt"] for a in details["attempts"]] == [1, 2]
    assert details["attempts"][0]["runner_id"] != details["attempts"][1]["runner_id"]
    ran = Run(workspace, run["id"])
    assert sorted(ran.get_metrics()["attempt"]) == [1.0, 2.0]
    logs = ran.get_logs("stdout")["text"]
    assert "attempt 1 started" in logs and "attempt 2 started" in logs
    assert "outputs/model.txt" in ran.get_file_names()
