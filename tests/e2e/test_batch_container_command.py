"""Because moto does not execute the container, the test that proves a Batch job really trains runs the
exact container command of the job spec locally, in a subprocess, against the platform: the same
command and environment Batch would give the container (batch_spec.container_command_env).

With a run token key, the job's environment is the one BatchDispatcher submitted to (moto's) Batch, its
token sealed with (moto's) KMS. The runner subprocess reaches that KMS through a small HTTP endpoint in
this process (KmsEndpoint: moto's server mode needs Flask, which the project does not install), named by
AWS_ENDPOINT_URL_KMS as any endpoint override would be."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chalicelib.services.run_callbacks import run_callbacks
from chalicelib.services.run_datasets import pin_datasets
from chalicelib.wiring import build_services
from chalicelib.compute.batch import spec as batch_spec
from chalicelib.compute.batch.dispatcher import BatchDispatcher
from chalicelib.compute.batch.provisioner import BatchProvisioner
from chalicelib.settings import Settings
from nimbus.runtime.job_spec import JobSpec
from nimbus import ScriptRunConfig, snapshot
from nimbus.runtime import sealed_token
from nimbus.experiment import Run

REGION = "us-east-1"

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


def queued_batch_run(platform, workspace, folder: Path, script: str, experiment: str,
                     inputs: tuple = ()) -> tuple[dict, str, JobSpec]:
    """(a Queued run of batch target `gpu` that no local worker takes, its run token, its job spec), the
    script snapshotted and uploaded as a client would, its inputs pinned as a submission pins them."""
    source = folder / "src"
    source.mkdir()
    (source / "train.py").write_text(script)
    uploaded = snapshot.upload(workspace.client, "default", snapshot.collect(source))
    services = build_services(Settings(backend="local", home=platform.home, public_url=platform.url))
    admin = services.identity.authenticate(f"Bearer {platform.credentials()['token']}")
    run_config = {**ScriptRunConfig(source_directory=source, script="train.py", inputs=inputs).to_dict(),
                  "compute": "gpu"}
    run_config, _ = pin_datasets(services.ctx, "default", "not-recorded", run_config)
    run = services.runs.create(admin, "default", experiment, status="Queued",
                               submission={"snapshot_id": uploaded["id"], "run_config": run_config})
    token = services.identity.create_run_token(run["id"], "default", admin.user)
    spec = JobSpec(run["id"], "default", 600, compute="gpu",
                   target={"name": "gpu", "type": "batch", "settings": {}, "resources": {"job_queue_arn": "q"}})
    return run, token, spec


def test_the_batch_container_command_trains_a_run_to_completion(platform, workspace, tmp_path):
    # Given a Queued run of a training script that no local worker takes, as a batch target's run would be
    run, token, spec = queued_batch_run(platform, workspace, tmp_path, TRAIN, "batch-e2e")

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


READ_INPUT = """\
import os
from nimbus import Run

folder = Run.get_context().input_datasets["rows"]
print("rows:", sorted(os.listdir(os.path.join(folder, "e2e"))), flush=True)
"""


def test_the_batch_container_command_makes_its_dataset_input_ready(platform, workspace, tmp_path):
    from nimbus import Dataset

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x\n1\n")
    (data / "b.csv").write_text("x\n2\n")
    blob = workspace.get_default_datastore()
    blob.upload(data, target_path="e2e")
    rows = Dataset.File.from_files((blob, "e2e/")).register(workspace, "rows")
    run, token, spec = queued_batch_run(platform, workspace, tmp_path, READ_INPUT, "batch-inputs",
                                        inputs=(rows.as_named_input("rows").as_download(),))
    submission = workspace.client.get(f"/v1/workspaces/default/runs/{run['id']}")["run_config"]
    assert submission["inputs"][0]["fingerprint"] == rows.fingerprint

    argv, env = batch_spec.container_command_env(spec, platform.url, token)
    assert not any("datastore" in value or "secret" in value.lower() for value in env.values())
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    host = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    finished = subprocess.run(argv, env={**host, **env}, cwd=job_dir, capture_output=True, text=True, timeout=180)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    details = workspace.client.get(f"/v1/workspaces/default/runs/{run['id']}")
    log = Run(workspace, run["id"]).get_logs("stdout")["text"]
    assert details["status"] == "Completed", (details.get("error"), log)
    assert "rows: ['a.csv', 'b.csv']" in log and "input rows: rows:1 (2 files)" in log
    assert (tmp_path / ".cache" / "nimbus" / "datasets" / rows.fingerprint).is_dir()  # the machine's cache


# --- the same with a sealed token ---------------------------------------------------------------------


class KmsEndpoint:
    """KMS's Decrypt over HTTP (the JSON protocol botocore speaks), answered by moto's KMS in this process.
    Records the requests it answered."""

    def __init__(self):
        import boto3

        kms, self.requests = boto3.client("kms", region_name=REGION), []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                endpoint.requests.append((self.headers.get("X-Amz-Target"), body))
                if self.headers.get("X-Amz-Target") != "TrentService.Decrypt":
                    return self._send(400, {"__type": "UnknownOperationException", "message": "Decrypt only"})
                from botocore.exceptions import ClientError

                try:
                    answer = kms.decrypt(CiphertextBlob=base64.b64decode(body["CiphertextBlob"]),
                                         EncryptionContext=body.get("EncryptionContext") or {})
                except ClientError as err:
                    return self._send(400, {"__type": err.response["Error"]["Code"],
                                            "message": err.response["Error"].get("Message", "")})
                self._send(200, {"KeyId": answer["KeyId"], "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                                 "Plaintext": base64.b64encode(answer["Plaintext"]).decode()})

            def _send(self, status, document):
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kms_endpoint(aws_env):
    endpoint = KmsEndpoint()
    yield endpoint
    endpoint.close()


def _batch_settings(home: Path, api_url: str) -> tuple[Settings, dict]:
    """The platform's local store, moto's Batch (a queue, the roles) and a run token key behind its alias."""
    import boto3

    ec2, iam, kms = (boto3.client(name, region_name=REGION) for name in ("ec2", "iam", "kms"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    for name in ("job", "service", "instance"):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="instance")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="instance", RoleName="instance")
    kms.create_alias(AliasName="alias/nimbus-e2e-run-tokens", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    settings = Settings(backend="local", home=home, public_url=api_url, region=REGION, api_url=api_url,
                        runner_image="registry.example/nimbus-runner:1", batch_job_role_arn="job",
                        batch_instance_role_arn=profile, batch_service_role_arn="service",
                        run_token_key="alias/nimbus-e2e-run-tokens")
    return settings, {"provisioning": "EC2", "max_vcpus": 4,
                      "subnets": [ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]],
                      "security_group_ids": [ec2.create_security_group(GroupName="b", Description="b",
                                                                       VpcId=vpc)["GroupId"]]}


def test_the_batch_container_command_opens_its_sealed_token_and_trains(platform, workspace, tmp_path, kms_endpoint):
    import boto3

    # Given a snapshot of a training script, and a Queued run of a batch target whose platform seals tokens
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text(TRAIN)
    uploaded = snapshot.upload(workspace.client, "default", snapshot.collect(source))
    settings, network = _batch_settings(platform.home, platform.url)
    services = build_services(settings)
    admin = services.identity.authenticate(f"Bearer {platform.credentials()['token']}")
    resources = BatchProvisioner(settings, poll_seconds=0).create("default", "gpu", network)
    target = {"name": "gpu", "type": "batch", "settings": network, "resources": resources, "state": "Succeeded"}
    run_config = {**ScriptRunConfig(source_directory=source, script="train.py").to_dict(), "compute": "gpu"}
    run = services.runs.create(admin, "default", "batch-e2e", status="Queued",
                               submission={"snapshot_id": uploaded["id"], "run_config": run_config})

    # When the dispatcher submits it, and the job's command runs with the job's environment as Batch holds it
    BatchDispatcher(services.ctx, run_callbacks(services.ctx), settings).submit(JobSpec(run["id"], "default", 600, compute="gpu", target=target))
    batch = boto3.client("batch", region_name=REGION)
    (job,) = batch.describe_jobs(jobs=[services.runs.get("default", run["id"])["job"]["job_id"]])["jobs"]
    (definition,) = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"]
    argv, env = definition["containerProperties"]["command"], {e["name"]: e["value"] for e in job["container"]["environment"]}
    assert "NIMBUS_RUN_TOKEN" not in env and sealed_token.SEALED_ENV in env
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    # Batch's region and the job role's credentials; KMS at the endpoint above
    aws = {"AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL_KMS": kms_endpoint.url}
    host = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    finished = subprocess.run(argv, env={**host, **aws, **env}, cwd=job_dir, capture_output=True, text=True,
                              timeout=180)

    # Then the runner opened the token with the run's encryption context, and the run completed
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert [(operation, body["EncryptionContext"]) for operation, body in kms_endpoint.requests] == [
        ("TrentService.Decrypt", {"nimbus:run": run["id"]})]
    details = workspace.client.get(f"/v1/workspaces/default/runs/{run['id']}")
    assert details["status"] == "Completed", details.get("error")
    ran = Run(workspace, run["id"])
    assert [round(v, 3) for v in ran.get_metrics()["loss"]] == [1.0, 0.5, 0.333]
    assert "epoch 3" in ran.get_logs("stdout")["text"]

    # and the same job environment under another run's id does not open: the runner stops before any call
    kms_endpoint.requests.clear()
    refused = subprocess.run(argv, env={**host, **aws, **env, "NIMBUS_RUN_ID": "0" * 22}, cwd=job_dir,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"does not open for run {'0' * 22}" in refused.stderr
