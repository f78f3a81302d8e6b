"""run_isolation: which mechanism keeps a run's script from the platform's state, and each one with real processes."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nimbus.runtime import run_isolation
from nimbus.runtime.job_spec import JobSpec
from nimbus.runtime.local_worker import JOB_FILE, LocalWorker

SYSTEM_PYTHON = "/usr/bin/python3"  # reachable by any uid, unlike an interpreter under /root
PROBE = """
import os, sys
for path in sys.argv[1:]:
    try:
        open(path).read() if os.path.isfile(path) else os.listdir(path)
        print(path, "READ")
    except OSError as err:
        print(path, type(err).__name__)
os.makedirs("outputs", exist_ok=True)
open("outputs/own.txt", "w").write("mine")
open(os.path.join(os.environ["HOME"], "h"), "w").write("home")
open(os.path.join(os.environ["TMPDIR"], "t"), "w").write("tmp")
print("uid", os.getuid())
"""


# --- the decision ---------------------------------------------------------------------------------
def closed_folder(tmp_path: Path) -> Path:
    """A python inside a folder other users cannot pass (like /root)."""
    closed = tmp_path / "closed"
    (closed / "bin").mkdir(parents=True)
    python = closed / "bin" / "python"
    python.write_text("")
    os.chmod(closed, 0o700)
    return python


def test_as_root_with_a_reachable_interpreter_runs_get_their_own_uid():
    isolation = run_isolation.decide("/usr/bin/env", [], [], euid=0, abi=0, search_path=["/usr/lib"])
    assert isolation.mechanism == "uid" and isolation.warning is None
    assert "uid of its own" in isolation.notice


def test_as_root_with_an_interpreter_closed_to_other_users_landlock_is_used(tmp_path):
    python = closed_folder(tmp_path)
    isolation = run_isolation.decide(str(python), [], [], euid=0, abi=3, search_path=[])
    assert isolation.mechanism == "landlock" and isolation.warning is None
    assert "closed to other users" in isolation.reason and "Landlock ABI 3" in isolation.reason


def test_a_closed_folder_on_the_way_to_the_jobs_folder_rules_out_the_uid_mechanism(tmp_path):
    os.chmod(tmp_path, 0o700)
    isolation = run_isolation.decide("/usr/bin/env", [tmp_path / "home"], [tmp_path / "home" / "jobs"],
                                     euid=0, abi=0, search_path=[])
    blocked = isolation.reason.split("root, but ")[1].split(" is closed")[0]
    assert isolation.mechanism == "none" and (Path(blocked) == tmp_path or Path(blocked) in tmp_path.parents)


def test_not_root_with_landlock_runs_are_sandboxed():
    isolation = run_isolation.decide("/usr/bin/env", [], [], euid=1000, abi=1, search_path=[])
    assert isolation.mechanism == "landlock" and "does not run as root" in isolation.reason


def test_not_root_without_landlock_the_platform_warns_that_runs_are_not_isolated():
    isolation = run_isolation.decide("/usr/bin/env", [], [], euid=1000, abi=0, search_path=[])
    assert isolation.mechanism == "none"
    assert isolation.notice.startswith("WARNING: runs are NOT isolated")
    assert "credentials, signing key" in isolation.warning and "Landlock" in isolation.warning
    assert run_isolation.confinement_for(isolation) is None


def test_root_without_a_reachable_interpreter_nor_landlock_warns_too(tmp_path):
    isolation = run_isolation.decide(str(closed_folder(tmp_path)), [], [], euid=0, abi=0, search_path=[])
    assert isolation.mechanism == "none" and "closed to other users" in isolation.warning


def test_a_worker_keeps_its_runs_from_its_home_the_jobs_folder_and_nimbus_home_but_shares_the_environments(
        tmp_path, monkeypatch):
    monkeypatch.setenv("NIMBUS_HOME", str(tmp_path / "nimbus-home"))
    worker = LocalWorker(tmp_path / "jobs", "http://127.0.0.1:9", lambda spec: "t", lambda *a: None,
                         lambda *a: "Completed", protected=[tmp_path / "platform"],
                         job_env={"NIMBUS_ENVS_DIR": str(tmp_path / "platform" / "envs")})
    try:
        isolation = worker.isolation
        assert set(isolation.protected) == {str(tmp_path / name) for name in ("nimbus-home", "platform", "jobs")}
        assert isolation.shared == (str(tmp_path / "platform" / "envs"),)
    finally:
        worker.stop()


def test_a_confinement_goes_to_the_runner_and_back_and_a_broken_one_is_refused():
    confinement = run_isolation.Confinement("landlock", None, ("/h",), True, ("/h/envs",))
    assert run_isolation.Confinement.from_env({run_isolation.ENV: confinement.to_env()}) == confinement
    assert run_isolation.Confinement.from_env({}) is None
    with pytest.raises(run_isolation.IsolationError):
        run_isolation.Confinement.from_env({run_isolation.ENV: json.dumps({"mechanism": "uid"})})


def test_uids_are_drawn_from_the_reserved_range_and_never_one_in_use():
    taken = set(range(run_isolation.UID_FIRST, run_isolation.UID_FIRST + run_isolation.UID_COUNT - 1))
    assert run_isolation.allocate_uid(taken) == run_isolation.UID_FIRST + run_isolation.UID_COUNT - 1


# --- the mechanisms, with real processes ----------------------------------------------------------
@pytest.fixture
def platform_dirs():
    """A platform home with its secrets, a finished run's folder and a new run's, under a folder any uid may
    pass (pytest's own tmp folder is closed to other users)."""
    base = Path(tempfile.mkdtemp(prefix="nimbus-isolation-", dir="/tmp"))
    os.chmod(base, 0o711)
    home = base / "home"
    (home / "blobs").mkdir(parents=True)
    (home / "signing.key").write_text("key")
    os.chmod(home / "signing.key", 0o600)
    (home / "nimbus.db").write_text("rows")  # as a database is made: readable by all, until the worker closes it
    os.chmod(home / "nimbus.db", 0o644)
    jobs, envs = home / "jobs", home / "envs"
    other = jobs / "run-a" / "code" / "outputs"
    other.mkdir(parents=True)
    (other / "private.txt").write_text("run a only")
    (jobs / "run-b" / "code").mkdir(parents=True)
    yield base, home, jobs, envs
    shutil.rmtree(base)


def probe(confinement, home, jobs, *more_paths, env=None, **popen):
    """Runs PROBE as run-b's script: it tries the platform's files and run-a's, then does its own work."""
    job = jobs / "run-b"
    code = job / "code"
    env = {"PATH": "/usr/bin:/bin", **(env or {}), **run_isolation.prepare_folders(confinement, job, code)}
    argv = [SYSTEM_PYTHON, "-c", PROBE, str(home / "signing.key"), str(home / "nimbus.db"),
            str(jobs / "run-a" / "code" / "outputs" / "private.txt"), str(jobs / "run-a"), *map(str, more_paths)]
    own = [code, job / "home", job / "tmp"]
    with run_isolation.popen_options(confinement, SYSTEM_PYTHON, own) as options:
        done = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True, timeout=60, check=False,
                              **popen, **options)
    assert done.returncode == 0, done.stderr
    return done.stdout, code


def refused(out: str, *names: str) -> bool:
    lines = out.splitlines()
    return all(any(line.endswith("PermissionError") and name in line for line in lines) for name in names)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON), reason="needs root and a system python")
def test_under_its_own_uid_a_script_reads_none_of_the_platform_nor_another_run(platform_dirs):
    _, home, jobs, envs = platform_dirs
    isolation = run_isolation.decide(SYSTEM_PYTHON, [home, jobs], [jobs, envs], [envs], search_path=[])
    assert isolation.mechanism == "uid", isolation.reason
    run_isolation.open_for_runs([home], [jobs, envs])  # what the worker does at each launch
    run_isolation.close_job_folder(jobs / "run-a")  # what it does when a run ends
    os.chmod(jobs / "run-b", 0o711)
    confinement = run_isolation.confinement_for(isolation)

    out, code = probe(confinement, home, jobs)

    assert f"uid {confinement.uid}" in out
    assert refused(out, "signing.key", "nimbus.db", "private.txt", "run-a"), out
    assert (code / "outputs" / "own.txt").read_text() == "mine"
    assert (code / "outputs" / "own.txt").stat().st_uid == confinement.uid
    assert stat.S_IMODE((code / "outputs" / "own.txt").stat().st_mode) == 0o600  # umask 077: not for other runs
    assert stat.S_IMODE(home.stat().st_mode) == 0o711 and stat.S_IMODE((home / "blobs").stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0 or run_isolation.landlock_abi() < 1 or not os.path.exists(SYSTEM_PYTHON),
                    reason="needs root (to stand for a user), Landlock and a system python")
def test_in_a_landlock_sandbox_a_script_of_the_platforms_own_user_reads_none_of_it(platform_dirs):
    # Given the platform's files owned by the very user the script runs as (the platform is not root)
    base, home, jobs, envs = platform_dirs
    user = 1_000_777
    for folder, dirs, files in os.walk(base):
        for name in [folder, *(os.path.join(folder, entry) for entry in dirs + files)]:
            os.lchown(name, user, user)
    isolation = run_isolation.decide(SYSTEM_PYTHON, [home, jobs], [jobs, envs], [envs], euid=user, search_path=[])
    assert isolation.mechanism == "landlock"
    confinement = run_isolation.Confinement("landlock", protected=isolation.protected, shared=isolation.shared)
    job = jobs / "run-b"
    for name in ("home", "tmp"):
        (job / name).mkdir()
        os.lchown(job / name, user, user)
    (job / JOB_FILE).write_text("{}")
    (base / "elsewhere.txt").write_text("another secret of the machine, beside the platform's home")
    for path in (job / JOB_FILE, base / "elsewhere.txt"):
        os.lchown(path, user, user)

    # When the script runs as that user, sandboxed, with a PYTHONPATH of its author's choosing
    out, code = probe(confinement, home, jobs, job / JOB_FILE, base / "elsewhere.txt", env={"PYTHONPATH": str(base)},
                      user=user, group=user, extra_groups=[])

    # Then file modes would let it read everything, yet the sandbox refused all but its own folders
    assert f"uid {user}" in out
    assert refused(out, "signing.key", "nimbus.db", "private.txt", "run-a", JOB_FILE, "elsewhere.txt"), out
    assert (code / "outputs" / "own.txt").read_text() == "mine" and (job / "home" / "h").is_file()


TELL_ISOLATION = "import os, time; print(os.environ['NIMBUS_RUN_ISOLATION']); time.sleep(0.5)"


def test_a_worker_records_its_runs_uid_and_closes_the_folder_when_the_run_ends(tmp_path):
    uid_isolation = run_isolation.Isolation("uid", "the platform runs as root")
    ended = []
    worker = LocalWorker(tmp_path / "jobs", "http://127.0.0.1:9", lambda spec: "token", lambda *a: ended.append(a),
                         lambda *a: "Completed", poll_seconds=0.02, isolation=uid_isolation,
                         command=lambda spec: [sys.executable, "-c", TELL_ISOLATION])
    try:
        worker.submit(JobSpec("run-1", "default", None))
        folder = tmp_path / "jobs" / "run-1"
        wait_for(lambda: (folder / JOB_FILE).exists())
        record = json.loads((folder / JOB_FILE).read_text())
        assert run_isolation.UID_FIRST <= record["uid"] < run_isolation.UID_FIRST + run_isolation.UID_COUNT
        assert stat.S_IMODE(folder.stat().st_mode) == 0o711  # its uid passes through to its own folders
        wait_for(lambda: not worker.active_jobs())
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # ended: the platform's alone
        told = json.loads((folder / "runner.log").read_text())
        assert told["mechanism"] == "uid" and told["uid"] == record["uid"]
        assert stat.S_IMODE((folder / "runner.log").stat().st_mode) == 0o600
    finally:
        worker.stop()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
