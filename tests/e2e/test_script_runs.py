"""Submitted scripts running on the local compute target, end to end: snapshot, runner, logs, outputs."""
from __future__ import annotations

import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from nimbus import Experiment, ScriptRunConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path):
    """A source folder of its own (tmp_path also holds the platform's home)."""
    path = tmp_path / "src"
    path.mkdir()
    return path


def wait_until_ended(run, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        details = run.get_details()
        if details["status"] in ("Completed", "Failed", "Canceled"):
            return details
        time.sleep(0.2)
    raise AssertionError(f"run {run.id} still {details['status']} after {timeout} s")


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout.strip()


def test_the_iris_example_trains_and_records_everything(workspace, tmp_path):
    # Given the example in a git repository of its own
    source = tmp_path / "iris"
    shutil.copytree(ROOT / "examples" / "iris", source)
    (source / "outputs").mkdir()
    (source / "outputs" / "stale.txt").write_text("ignored by .amlignore\n")
    git(source, "init", "-q")
    git(source, "-c", "user.name=t", "-c", "user.email=t@example.org", "add", ".")
    git(source, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "iris")

    # When it is submitted
    config = ScriptRunConfig(source_directory=source, script="train.py", arguments=["--epochs", "3"])
    run = Experiment(workspace, "iris").submit(config)
    details = wait_until_ended(run)

    # Then it completed with its metrics, image, outputs, logs, git info and snapshot
    assert details["status"] == "Completed", details.get("error")
    metrics = run.get_metrics()
    assert len(metrics["accuracy"]) == 3 and metrics["final_accuracy"] > 0.8
    assert "confusion_matrix" in details["metric_types"]
    assert "outputs/model.pkl" in run.get_file_names()
    assert "epoch 3" in run.get_logs("stdout")["text"]
    assert details["git"]["commit"] == git(source, "rev-parse", "HEAD") and details["git"]["dirty"] is False
    snapshot = workspace.client.get(f"/v1/workspaces/default/snapshots/{details['snapshot_id']}")
    assert sorted(f["path"] for f in snapshot["files"]) == [".amlignore", ".nimbus/batch.runconfig.yml",
                                                            "requirements.txt", "score.py", "train.py"]
    archive = run.download_snapshot(tmp_path / "code", as_zip=True)
    with zipfile.ZipFile(archive) as opened:
        assert opened.read("train.py") == (source / "train.py").read_bytes()


def test_a_failing_script_fails_the_run_with_its_exit_code_and_stderr(workspace, folder):
    (folder / "boom.py").write_text("import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)\n")
    run = Experiment(workspace, "failures").submit(ScriptRunConfig(source_directory=folder, script="boom.py"))
    details = wait_until_ended(run)
    assert details["status"] == "Failed"
    assert "3" in details["error"]["message"] and "about to fail" in str(details["error"])


def test_a_link_in_outputs_to_the_platforms_signing_key_is_not_uploaded(workspace, platform, folder):
    # Given a script that links the platform's signing key (and credentials) into its outputs
    key, credentials = platform.home / "signing.key", platform.home / "credentials"
    (folder / "leak.py").write_text(
        "import os, sys\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "os.symlink(sys.argv[1], 'outputs/signing.key')\n"
        "os.symlink(sys.argv[2], 'outputs/credentials')\n"
        "open('outputs/result.txt', 'w').write('fine')\n"
        "os.symlink('result.txt', 'outputs/latest.txt')\n")
    config = ScriptRunConfig(source_directory=folder, script="leak.py", arguments=[str(key), str(credentials)])

    # When it runs
    run = Experiment(workspace, "links").submit(config)
    details = wait_until_ended(run)

    # Then its own files are stored, the link inside as what it points to, and neither secret at all
    assert details["status"] == "Completed", details.get("error")
    assert key.is_file() and credentials.is_file()  # there to be read, had the links been followed
    assert sorted(run.get_file_names()) == ["outputs/latest.txt", "outputs/result.txt"]


def test_a_script_past_its_max_duration_is_stopped(workspace, folder):
    (folder / "slow.py").write_text("import time\ntime.sleep(120)\n")
    config = ScriptRunConfig(source_directory=folder, script="slow.py", max_run_duration_seconds=2)
    details = wait_until_ended(Experiment(workspace, "failures").submit(config), timeout=60)
    assert details["status"] == "Failed" and "max run duration" in details["error"]["message"]


def test_cancel_stops_a_running_script(workspace, platform, folder):
    (folder / "loop.py").write_text(  # its marker in its own folder: all a run may write
        "import time, pathlib, sys\n"
        "while True:\n"
        "    pathlib.Path('still-running').write_text(str(time.time()))\n"
        "    time.sleep(0.1)\n")
    run = Experiment(workspace, "failures").submit(ScriptRunConfig(source_directory=folder, script="loop.py"))
    marker = platform.home / "jobs" / run.id / "code" / "still-running"
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    run.cancel()
    time.sleep(1.5)
    last = marker.read_text()
    time.sleep(1.0)
    assert marker.read_text() == last  # nothing writes any more: the process tree is gone
    assert run.get_details()["status"] == "Canceled"


def test_a_missing_script_is_refused_before_anything_is_uploaded(workspace, folder):
    from nimbus.exceptions import InvalidError

    with pytest.raises(InvalidError) as refused:
        Experiment(workspace, "failures").submit(ScriptRunConfig(source_directory=folder, script="absent.py"))
    assert "absent.py" in str(refused.value)


def test_a_crashing_script_and_a_noisy_one_end_in_clear_states(workspace, folder):
    (folder / "crash.py").write_text("import os\nos.abort()\n")
    (folder / "noisy.py").write_text("import sys\nfor i in range(40000):\n    print('x' * 99)\n")
    crashed = Experiment(workspace, "failures").submit(ScriptRunConfig(source_directory=folder, script="crash.py"))
    noisy = Experiment(workspace, "failures").submit(ScriptRunConfig(source_directory=folder, script="noisy.py"))
    crash_details = wait_until_ended(crashed)
    assert crash_details["status"] == "Failed" and crash_details["error"]["message"]
    assert wait_until_ended(noisy)["status"] == "Completed"
    listing = workspace.client.get(f"/v1/workspaces/default/runs/{noisy.id}/logs")["streams"]
    streams = {s["stream"]: s["size"] for s in listing}
    assert streams["stdout"] == 40000 * 100  # 4 MB of output, every character kept
