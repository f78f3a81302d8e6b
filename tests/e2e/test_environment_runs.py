"""Runs in registered environments on the live local platform: a venv built once per definition, reused
by the next run, and a build failure reported as the run's error."""
from __future__ import annotations

from nimbus import Environment, Experiment, ScriptRunConfig
from tests.e2e.test_script_runs import wait_until_ended
from tests.wheels import TINY_GREETING, build_tiny_wheel

SCRIPT = """\
import os, sys
import nimbus_tiny
from nimbus import Run

run = Run.get_context()
run.log("from_environment", 1)
print(nimbus_tiny.GREETING + os.environ["SUFFIX"])
print("prefix", sys.prefix)
"""


def test_a_run_uses_its_environment_and_the_next_run_reuses_the_build(workspace, platform, tmp_path):
    # Given an environment whose package exists only as a local wheel, and a script importing it
    wheels = build_tiny_wheel(tmp_path / "wheels").parent
    tiny = Environment("tiny")
    tiny.pip_packages = ["--no-index", f"--find-links {wheels}", "nimbus-tiny==0.1"]
    tiny.environment_variables["SUFFIX"] = "!"
    tiny = tiny.register(workspace)
    source = tmp_path / "src"
    source.mkdir()
    (source / "use_tiny.py").write_text(SCRIPT)
    experiment = Experiment(workspace, "environments")

    # When a run names it
    first = experiment.submit(ScriptRunConfig(source_directory=source, script="use_tiny.py", environment=tiny))
    details = wait_until_ended(first)

    # Then the script ran in the environment's venv under the platform's home, with its variables
    assert details["status"] == "Completed", details.get("error")
    assert details["run_config"]["environment"] == "tiny:1"
    venv = platform.home / "envs" / tiny.hash
    stdout = first.get_logs("stdout")["text"]
    assert TINY_GREETING + "!" in stdout and f"prefix {venv}" in stdout
    assert first.get_metrics()["from_environment"] == 1
    built = {path: path.stat().st_mtime_ns for path in (venv / "nimbus-ready.json", venv.with_name(f"{tiny.hash}.build.log"))}

    # And a second run (naming the latest version) reuses the venv without building again
    second = experiment.submit(ScriptRunConfig(source_directory=source, script="use_tiny.py", environment="tiny"))
    assert wait_until_ended(second)["status"] == "Completed"
    assert {path: path.stat().st_mtime_ns for path in built} == built
    assert Environment.get(workspace, "tiny").used is True

    # A definition that cannot be built fails its run with the build log's tail
    broken = Environment("broken")
    broken.pip_packages = ["--no-index", f"--find-links {wheels}", "nimbus-absent==1.0"]
    broken = broken.register(workspace)
    failed = wait_until_ended(experiment.submit(ScriptRunConfig(source_directory=source, script="use_tiny.py",
                                                                environment=broken)))
    assert failed["status"] == "Failed"
    assert "preparing the run failed" in failed["error"]["message"]
    assert "nimbus-absent" in failed["error"]["message"] and "build.log" in failed["error"]["message"]
    assert not (platform.home / "envs" / broken.hash).exists()
