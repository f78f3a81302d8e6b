"""`nimbus agent` as a real process, serving an instance target of the live local platform."""
from __future__ import annotations

import re
import signal
import threading
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nimbus import ComputeTarget, Experiment, ScriptRunConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def box(workspace):
    return ComputeTarget.create(workspace, "box", "instance", {"max_concurrent_runs": 2})


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "src"
    path.mkdir()
    return path


def agent(tmp_path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nimbus", "agent", "--compute", "box", "--jobs-dir",
                             str(tmp_path / "agent-jobs"), *options], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_status(run, wanted: set[str], timeout: float = 60.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        details = run.get_details()
        if details["status"] in wanted:
            return details
        time.sleep(0.1)
    raise AssertionError(f"run {run.id} still {details['status']} after {timeout} s")


def test_an_agent_runs_the_queued_runs_of_its_target_then_exits(workspace, box, folder, tmp_path):
    # Given two runs submitted to the instance target (nothing runs them yet)
    (folder / "hello.py").write_text("import sys\nprint('hello', sys.argv[1])\n")
    experiment = Experiment(workspace, "agents")
    runs = [experiment.submit(ScriptRunConfig(source_directory=folder, script="hello.py", arguments=[str(n)],
                                              compute_target="box")) for n in range(2)]
    assert {r.get_details()["status"] for r in runs} == {"Queued"}
    assert box.active_runs == 2

    # When an agent runs once
    process = agent(tmp_path, "--once")
    output, _ = process.communicate(timeout=120)

    # Then both ran to completion, each in its own folder, and the target has no active run left
    assert process.returncode == 0, output
    assert "agent stopped after 2 run(s)" in output
    assert re.search(r"runs are (isolated: each run's script|NOT isolated)", output), output  # docs/execution.md
    for number, run in enumerate(runs):
        details = run.get_details()
        assert details["status"] == "Completed", (details.get("error"), output)
        assert details["compute_target"] == "box"
        assert run.get_logs("stdout")["text"] == f"hello {number}\n"
        assert (tmp_path / "agent-jobs" / run.id).is_dir()
    assert box.active_runs == 0
    box.delete()


def test_a_stopped_agent_fails_the_runs_it_could_not_finish(workspace, box, folder, tmp_path):
    (folder / "slow.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    run = Experiment(workspace, "agents").submit(ScriptRunConfig(source_directory=folder, script="slow.py",
                                                                 compute_target="box"))
    process = agent(tmp_path, "--poll-seconds", "0.2", "--grace-seconds", "0")
    try:
        wait_for_status(run, {"Running"})
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    details = wait_for_status(run, {"Failed"}, timeout=10)
    assert "agent running it was stopped" in details["error"]["message"]
    assert box.active_runs == 0


def test_a_run_canceled_in_nimbus_has_its_job_stopped_by_the_agent(workspace, box, folder, tmp_path):
    from nimbus.runtime.agent import Agent, AgentSettings

    (folder / "slow.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    run = Experiment(workspace, "agents").submit(ScriptRunConfig(source_directory=folder, script="slow.py",
                                                                 compute_target="box"))
    worker = Agent(workspace, AgentSettings("box", poll_seconds=0.1, grace_s=0, watch_s=0.2,
                                            jobs_dir=tmp_path / "jobs"), log=lambda text: None)
    thread = threading.Thread(target=worker.run, kwargs={"once": True})
    thread.start()
    try:
        wait_for_status(run, {"Running"})
        run.cancel()
        thread.join(timeout=30)  # --once: it returns once the job is gone
        assert not thread.is_alive()
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert run.get_details()["status"] == "Canceled" and worker.claimed == [run.id]
