"""Because moto does not execute the container, the test that proves a Batch job really trains runs the
exact container command of the job spec locally, in a subprocess, against the platform: the same
command and environment Batch would give the container (batch_spec.container_command_env)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chalicelib.api.deps import Services
from chalicelib.compute import batch_spec
from chalicelib.compute.dispatcher import JobSpec
from chalicelib.settings import Settings
from nimbus import ScriptRunConfig, snapshot
from nimbus.run import Run

TRAIN = """\
from pathlib import Path
from nimbus import Run

run = Run.get_context()
for epoch in range(1, 4):
    run.log("loss", 1.0 / epoch)
    print(f"epoch {epoch}", flush=True)
Path("outputs").mkdir(exist_ok=True)
Path("outputs/model.txt").write_text("weights")
"""


def test_the_batch_container_command_trains_a_run_to_completion(platform, workspace, tmp_path):
    # Given a snapshot of a training script, uploaded as a client would
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text(TRAIN)
    uploaded = snapshot.upload(workspace.client, "default", snapshot.collect(source))

    # and a Queued run that no local worker takes (no queue entry), as a batch target's run would be
    services = Services.from_settings(Settings(backend="local", home=platform.home, public_url=platform.url))
    admin = services.identity.authenticate(f"Bearer {platform.credentials()['token']}")
    run_config = {**ScriptRunConfig(source_directory=source, script="train.py").to_dict(), "compute": "gpu"}
    run = services.runs.create(admin, "default", "batch-e2e", status="Queued",
                               submission={"snapshot_id": uploaded["id"], "run_config": run_config})
    token = services.identity.create_run_token(run["id"], "default", admin.user)
    spec = JobSpec(run["id"], "default", 600, compute="gpu",
                   target={"name": "gpu", "type": "batch", "settings": {}, "resources": {"job_queue_arn": "q"}})

    # When the job's container command runs with the job's environment (in a fresh job folder)
    argv, env = batch_spec.container_command_env(spec, platform.url, token)
    assert argv == batch_spec.register_job_definition(spec, table="nimbus", default_image="img",
                                                      roles=batch_spec.BatchRoles())["containerProperties"]["command"]
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    # Only the host's interpreter location is added: the image's `python` is this checkout's one here.
    host = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    finished = subprocess.run(argv, env={**host, **env}, cwd=job_dir, capture_output=True, text=True, timeout=180)

    # Then the run completed with its metrics, outputs and logs
    assert finished.returncode == 0, finished.stdout + finished.stderr
    details = workspace.client.get(f"/v1/workspaces/default/runs/{run['id']}")
    assert details["status"] == "Completed", details.get("error")
    ran = Run(workspace, run["id"])
    assert [round(v, 3) for v in ran.get_metrics()["loss"]] == [1.0, 0.5, 0.333]
    assert "outputs/model.txt" in ran.get_file_names()
    assert "epoch 3" in ran.get_logs("stdout")["text"]
