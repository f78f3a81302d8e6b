"""What a run can reach on the local platform: its own work, and none of the platform's state or another run's."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nimbus import Experiment, ScriptRunConfig, Workspace
from nimbus.runtime import run_isolation
from tests.e2e.conftest import ROOT, Platform
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

for label, path in zip(("credentials", "signing key", "database", "other run"), sys.argv[1:5]):
    attempt(label, path)
try:
    os.listdir(sys.argv[5])
    print("other run folder: LISTED")
except OSError as err:
    print(f"other run folder: {type(err).__name__}")
with tempfile.NamedTemporaryFile() as scratch:  # TMPDIR is the run's own
    scratch.write(b"x")
open(os.path.join(os.path.expanduser("~"), "cache.txt"), "w").write("home is writable\\n")
os.makedirs("outputs", exist_ok=True)
open("outputs/result.txt", "w").write("own work\\n")
Run.get_context().log("probe", 1.0)
print(f"uid {os.getuid()}")
"""


def probe_the_platform(workspace, home: Path, sources: Path) -> str:
    """An earlier run leaves a file in its folder; a second run's script tries the platform's credentials, signing
    key and database, and that run's file and folder. Returns the second run's stdout, once its own work is checked."""
    first = sources / "first"
    first.mkdir()
    (first / "keep.py").write_text("import os\nos.makedirs('outputs', exist_ok=True)\n"
                                   "open('outputs/private.txt', 'w').write('run one only')\n")
    earlier = Experiment(workspace, "isolation").submit(ScriptRunConfig(source_directory=first, script="keep.py"))
    assert wait_until_ended(earlier)["status"] == "Completed"
    other_file = home / "jobs" / earlier.id / "code" / "outputs" / "private.txt"

    second = sources / "second"
    second.mkdir()
    (second / "probe.py").write_text(PROBE)
    secrets = [home / "credentials", home / "signing.key", home / "nimbus.db", other_file]
    assert all(path.is_file() for path in secrets)  # there to be read, were the run not kept from them
    config = ScriptRunConfig(source_directory=second, script="probe.py",
                             arguments=[*map(str, secrets), str(other_file.parent.parent)])
    run = Experiment(workspace, "isolation").submit(config)
    details = wait_until_ended(run)

    # Its own outputs, logs and metrics are there
    assert details["status"] == "Completed", details.get("error")
    assert "outputs/result.txt" in run.get_file_names()
    assert run.get_metrics()["probe"] == 1.0
    return run.get_logs("stdout")["text"]


def assert_all_refused(log: str) -> None:
    for label in ("credentials", "signing key", "database", "other run", "other run folder"):
        assert f"{label}: PermissionError" in log, log


def test_a_run_cannot_read_the_platforms_secrets_nor_another_run_but_does_its_own_work(workspace, platform, tmp_path):
    home = platform.home
    isolation = run_isolation.decide(sys.executable, [home, home / "jobs"], [home / "jobs", home / "envs"])
    if isolation.mechanism == "none":
        pytest.skip(f"this machine cannot isolate runs: {isolation.reason}")
    assert_all_refused(probe_the_platform(workspace, home, tmp_path))


def reachable_python() -> tuple[str, dict[str, str]] | None:
    """An interpreter any uid may run that imports the platform: this one, or the system's with this one's
    packages (when /root holds this one, say). None when there is none."""
    packages = [str(ROOT), *(p for p in sys.path if p.endswith("site-packages"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(packages)}
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        isolation = run_isolation.decide(python, [], [], euid=0, abi=0, search_path=packages)
        if isolation.mechanism == "uid" and subprocess.run(
                [python, "-c", "import chalicelib.local.platform, nimbus"], env=env, capture_output=True).returncode == 0:
            return python, env
    return None


@pytest.fixture
def home_any_uid_may_pass():
    base = Path(tempfile.mkdtemp(prefix="nimbus-e2e-", dir="/tmp"))  # pytest's own tmp folder is closed to them
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs get a uid of their own only when the platform runs as root")
def test_as_root_a_run_under_its_own_uid_cannot_read_the_platforms_secrets_nor_another_run(
        home_any_uid_may_pass, monkeypatch):
    found = reachable_python()
    if found is None:
        pytest.skip("no interpreter here is reachable by other uids and imports the platform")
    python, env = found
    platform = Platform(home_any_uid_may_pass / "home", python, env).start()
    try:
        monkeypatch.setenv("NIMBUS_URL", platform.url)
        monkeypatch.setenv("NIMBUS_TOKEN", platform.credentials()["token"])
        sources = home_any_uid_may_pass / "sources"
        sources.mkdir()
        log = probe_the_platform(Workspace.get("default"), platform.home, sources)
        assert_all_refused(log)
        uid = int(log.split("uid ")[1].split()[0])
        assert run_isolation.UID_FIRST <= uid < run_isolation.UID_FIRST + run_isolation.UID_COUNT
    finally:
        platform.stop(signal.SIGTERM)
    assert "each run's script runs under a uid of its own" in platform.process.stdout.read().decode()
