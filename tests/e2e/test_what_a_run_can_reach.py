"""What a run can reach on the local platform: its own work, and none of the platform's state or another run's."""
from __future__ import annotations

import sys

import pytest

from nimbus import Experiment, ScriptRunConfig
from nimbus.runtime import run_isolation
from tests.e2e.test_script_runs import wait_until_ended

PROBE = """\
import os, sys, tempfile
from nimbus import Run

def attempt(label, path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        print(f"{label}: READ")
    except OSError as err:
        print(f"{label}: {type(err).__name__}")

for label, path in zip(("credentials", "signing key", "other run"), sys.argv[1:4]):
    attempt(label, path)
try:
    os.listdir(sys.argv[4])
    print("other run folder: LISTED")
except OSError as err:
    print(f"other run folder: {type(err).__name__}")
with tempfile.NamedTemporaryFile(dir=None) as scratch:  # TMPDIR is the run's own
    scratch.write(b"x")
open(os.path.join(os.path.expanduser("~"), "cache.txt"), "w").write("home is writable\\n")
os.makedirs("outputs", exist_ok=True)
open("outputs/result.txt", "w").write("own work\\n")
Run.get_context().log("probe", 1.0)
"""


def test_a_run_cannot_read_the_platforms_secrets_nor_another_run_but_does_its_own_work(workspace, platform, tmp_path):
    home = platform.home
    isolation = run_isolation.decide(sys.executable, [home, home / "jobs"], [home / "jobs", home / "envs"])
    if isolation.mechanism == "none":
        pytest.skip(f"this machine cannot isolate runs: {isolation.reason}")

    # Given an earlier run that left a file in its own folder
    first = tmp_path / "first"
    first.mkdir()
    (first / "keep.py").write_text("import os\nos.makedirs('outputs', exist_ok=True)\n"
                                   "open('outputs/private.txt', 'w').write('run one only')\n")
    earlier = Experiment(workspace, "isolation").submit(ScriptRunConfig(source_directory=first, script="keep.py"))
    assert wait_until_ended(earlier)["status"] == "Completed"
    other_file = home / "jobs" / earlier.id / "code" / "outputs" / "private.txt"

    # And a script that tries the platform's credentials, its signing key and that run's file and folder
    second = tmp_path / "second"
    second.mkdir()
    (second / "probe.py").write_text(PROBE)
    secrets = [home / "credentials", home / "signing.key", other_file]
    assert all(path.is_file() for path in secrets)  # there to be read, were the run not kept from them
    config = ScriptRunConfig(source_directory=second, script="probe.py",
                             arguments=[*map(str, secrets), str(other_file.parent.parent)])

    # When it runs
    run = Experiment(workspace, "isolation").submit(config)
    details = wait_until_ended(run)

    # Then all of them were refused, and its own outputs, logs and metrics are there
    assert details["status"] == "Completed", details.get("error")
    log = run.get_logs("stdout")["text"]
    assert "credentials: PermissionError" in log, log
    assert "signing key: PermissionError" in log, log
    assert "other run: PermissionError" in log, log
    assert "other run folder: PermissionError" in log, log
    assert "outputs/result.txt" in run.get_file_names()
    assert run.get_metrics()["probe"] == 1.0
