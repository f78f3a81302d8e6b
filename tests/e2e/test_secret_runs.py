"""A real run reads workspace secrets and prints them: its stored logs, its error report and every file
the platform keeps show *** instead."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from nimbus import Experiment, ScriptRunConfig

VALUE = "e2e-Secret-Value-7f3a9c"
FROM_VARIABLE = "variable-Secret-2b81d0"

SCRIPT = f'''
import hashlib, os, sys, time
from nimbus import Run

run = Run.get_context()
value = run.get_secret("db-password")
print("read:", value, flush=True)
# the value in pieces, each flushed on its own, so the runner reads it in separate chunks
for piece in (value[:5], value[5:11], value[11:]):
    sys.stdout.write(piece)
    sys.stdout.flush()
    time.sleep(0.3)
print(" <- split", flush=True)
print("from the variable:", os.environ["DB_TOKEN"], flush=True)
print("stderr too:", value, file=sys.stderr, flush=True)
digest = lambda text: hashlib.sha256(text.encode()).hexdigest()  # the snapshot holds no value
assert digest(value) == {hashlib.sha256(VALUE.encode()).hexdigest()!r}
assert digest(os.environ["DB_TOKEN"]) == {hashlib.sha256(FROM_VARIABLE.encode()).hexdigest()!r}
sys.exit(4)  # so the run's error report carries the stderr tail
'''


def wait_until_ended(run, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        details = run.get_details()
        if details["status"] in ("Completed", "Failed", "Canceled"):
            return details
        time.sleep(0.2)
    raise AssertionError(f"run {run.id} still {details['status']} after {timeout} s")


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_a_run_reads_its_secrets_and_its_logs_show_stars(workspace, platform, tmp_path):
    # Given two workspace secrets, and a script that prints them whole and in pieces
    keyvault = workspace.get_default_keyvault()
    keyvault.set_secret("db-password", VALUE)
    keyvault.set_secret("db-token", FROM_VARIABLE)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "leak.py").write_text(SCRIPT)
    config = ScriptRunConfig(source_directory=folder, script="leak.py", secret_variables={"DB_TOKEN": "db-token"})

    # When it runs
    run = Experiment(workspace, "secrets").submit(config)
    details = wait_until_ended(run)

    # Then the script had the values (its own check passed: it exited with 4, not 1)
    assert details["status"] == "Failed" and details["error"]["exit_code"] == 4, details["error"]
    stdout, stderr = run.get_logs("stdout")["text"], run.get_logs("stderr")["text"]
    assert stdout.splitlines() == ["read: ***", "*** <- split", "from the variable: ***"]
    assert stderr == "stderr too: ***\n"
    assert "***" in details["error"]["stderr_tail"] and VALUE not in str(details)
    # and no file of the platform (its database, job folders, logs) nor the run's configuration holds them
    for value in (VALUE, FROM_VARIABLE):
        assert files_holding(platform.home, value.encode()) == []
    assert details["run_config"]["secret_variables"] == {"DB_TOKEN": "db-token"}


def test_a_run_naming_a_missing_secret_is_refused_at_submit(workspace, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "job.py").write_text("print('hi')\n")
    config = ScriptRunConfig(source_directory=folder, script="job.py", secret_variables={"TOKEN": "absent"})
    try:
        Experiment(workspace, "secrets").submit(config)
    except Exception as refused:  # noqa: BLE001 - the message and field are what matter
        assert "absent" in str(refused) and getattr(refused, "field", "") == "run_config.secret_variables.TOKEN"
    else:
        raise AssertionError("a run naming a missing secret was accepted")
