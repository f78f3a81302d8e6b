"""The runner with a recording fake of the API and real scripts in real subprocesses."""
from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from nimbus.exceptions import (
    AuthenticationError, ConfigurationError, ConflictError, NotFoundError, ServiceUnavailableError,
)
from nimbus.runtime import sealed_token
from nimbus.runtime.runner import EXIT_STOPPED, EXIT_UNREPORTED, JobSettings, Runner, build_command, main
from nimbus.runtime.runner_io import MAX_APPEND, LogPump

WS = "team"


class FakeApi:
    """Answers the routes the runner uses and records every call; `fail` picks calls to refuse."""

    url = "http://fake.invalid"

    def __init__(self, run_id: str, details: dict, files: dict[str, str]):
        self.run_id, self.details, self.files = run_id, dict(details, id=run_id, status="Queued"), files
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, dict | None]] = []
        self.statuses: list[dict] = []
        self.beats: list[dict] = []
        self.logs: dict[str, list[str]] = {}
        self.uploads: dict[str, bytes] = {}
        self.metrics: dict[str, list] = {}
        self.fail = lambda method, path, body: None  # returns an error to raise, or None

    # --- the ApiClient surface the runner touches ---------------------------------------------------
    def request(self, method, path, *, params=None, json=None, data=None, retry=None):
        body = json if data is None else orjson.loads(data)
        with self.lock:
            self.calls.append((method, path, body))
        error = self.fail(method, path, body)
        if error is not None:
            raise error
        return self._answer(method, path, body)

    def get(self, path, /, **params):
        return self.request("GET", path, params=params)

    def post(self, path, body=None, *, retry=False):
        return self.request("POST", path, json=body or {}, retry=retry)

    def upload(self, url, source, progress=None):
        data = source.read() if hasattr(source, "read") else Path(source).read_bytes()
        with self.lock:
            self.uploads[url.removeprefix("fake://")] = data
        return len(data)

    # --- the service --------------------------------------------------------------------------------
    def _answer(self, method, path, body):
        run = f"/v1/workspaces/{WS}/runs/{self.run_id}"
        if method == "GET" and path == run:
            return dict(self.details)
        if method == "GET" and path.startswith(f"/v1/workspaces/{WS}/snapshots/") and path.endswith("/downloads"):
            return {"files": [{"path": p, "url": f"fake://{p}", "content": c} for p, c in self.files.items()]}
        if path == run + "/status":
            with self.lock:
                self.statuses.append(body)
                self.details["status"] = body["status"]
            return dict(self.details)
        if path == run + "/heartbeat":
            with self.lock:
                self.beats.append(body)
            return {"id": self.run_id, "status": self.details["status"], "heartbeat": "2026-11-01T00:00:00.000Z"}
        if path.startswith(run + "/logs/"):
            assert 0 < len(body["text"]) <= MAX_APPEND
            with self.lock:
                self.logs.setdefault(path.rsplit("/", 1)[1], []).append(body["text"])
            return {}
        if path == run + "/outputs/uploads":
            return {"uploads": [{"path": p, "url": f"fake://{p}"} for p in body["paths"]]}
        if path == run + "/metrics":
            with self.lock:
                for entry in body["metrics"]:
                    self.metrics.setdefault(entry["name"], []).extend(entry["values"])
            return {}
        raise NotFoundError(f"no route {method} {path}")

    def status_names(self) -> list[str]:
        return [s["status"] for s in self.statuses]

    def log_text(self, stream: str) -> str:
        return "".join(self.logs.get(stream, []))


def fake_extract(files, target_dir, client):
    for item in files:
        target = Path(target_dir) / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item["content"])


def make_runner(tmp_path, files: dict[str, str], run_config: dict | None, attempt: int = 1, **details):
    run_id = uuid.uuid4().hex  # metrics are buffered per process by run: keep tests apart
    if run_config is not None:
        details["run_config"] = run_config
    api = FakeApi(run_id, {"snapshot_id": "snap1", **details}, files)
    settings = JobSettings("http://fake.invalid", "nmb_runtoken", WS, run_id, tmp_path, attempt)
    return Runner(settings, api, extract=fake_extract, echo=False), api


def test_a_successful_script_is_reported_completed_with_outputs_and_metrics(tmp_path, monkeypatch):
    script = (
        "import os, sys\n"
        "print('hello', sys.argv[1:], os.environ['NIMBUS_RUN_ID'] == os.environ['EXPECTED'], os.environ['GREETING'])\n"
        "print('careful', file=sys.stderr)\n"
        "os.makedirs('outputs/sub', exist_ok=True)\n"
        "open('outputs/model.txt', 'w').write('weights')\n"
        "open('outputs/sub/notes.txt', 'w').write('notes')\n"
        "data = b'x' * (30 * 2**20)\n"  # written, so resident: something for the memory peak to see
        "import time; time.sleep(0.6)\n"
    )
    runner, api = make_runner(tmp_path, {"train.py": script}, {"script": "train.py", "arguments": ["--lr", 0.1],
                                                               "environment_variables": {"GREETING": "hi"}})
    monkeypatch.setenv("EXPECTED", runner.settings.run_id)

    assert runner.execute() == 0

    assert api.status_names() == ["Preparing", "Running", "Finalizing", "Completed"]
    assert api.log_text("stdout") == "hello ['--lr', '0.1'] True hi\n"
    assert api.log_text("stderr") == "careful\n"
    assert (tmp_path / "code" / "train.py").read_text() == script
    assert api.uploads == {"outputs/model.txt": b"weights", "outputs/sub/notes.txt": b"notes"}
    assert api.metrics["duration_s"][0] > 0
    assert api.metrics["peak_memory_mb"][0] >= 30
    assert api.metrics["cpu_time_s"][0] >= 0


def test_a_failing_script_is_reported_failed_with_its_exit_code_and_the_tail_of_stderr(tmp_path):
    script = "import sys\nfor i in range(30):\n    print(f'line {i}', file=sys.stderr)\nsys.exit(3)\n"
    runner, api = make_runner(tmp_path, {"fail.py": script}, {"script": "fail.py"})

    assert runner.execute() == 0

    assert api.status_names() == ["Preparing", "Running", "Finalizing", "Failed"]
    error = api.statuses[-1]["error"]
    assert error["message"] == "fail.py exited with code 3"
    assert error["exit_code"] == 3
    assert error["stderr_tail"].splitlines() == [f"line {i}" for i in range(10, 30)]


def test_megabytes_of_output_arrive_whole_and_in_order_in_bounded_chunks(tmp_path):
    script = "import sys\nfor i in range(60000):\n    sys.stdout.write(f'{i:08d} ' + 'x' * 41 + '\\n')\n"
    runner, api = make_runner(tmp_path, {"loud.py": script}, {"script": "loud.py"})

    assert runner.execute() == 0

    expected = "".join(f"{i:08d} " + "x" * 41 + "\n" for i in range(60000))  # 3 MB
    chunks = api.logs["stdout"]
    assert len(chunks) > 3 and max(len(c) for c in chunks) <= MAX_APPEND
    assert "".join(chunks) == expected


def test_a_pump_holds_a_bounded_amount_while_the_service_is_slow():
    read_end, write_end = os.pipe()
    high_water = []

    def slow_send(text):
        high_water.append(pump._pending_chars)
        time.sleep(0.01)

    pump = LogPump(os.fdopen(read_end, "rb"), slow_send, max_append=1000, max_pending=5000, flush_seconds=0.05)
    pump.start()
    with os.fdopen(write_end, "wb") as out:
        for _ in range(100):
            out.write(b"y" * 1000)
            out.flush()
    pump.wait()
    assert max(high_water) <= 5000 + 64 * 1024  # the cap, plus at most one read waiting to be let in


def test_a_command_is_split_without_a_shell_and_runs_with_the_prepared_python(tmp_path):
    config = {"command": "python -c 'import sys; print(sys.argv[1:], sys.executable)' a 'b c' '$HOME'",
              "arguments": [7]}
    runner, api = make_runner(tmp_path, {"x.txt": ""}, config)

    assert runner.execute() == 0

    assert api.log_text("stdout") == f"['a', 'b c', '$HOME', '7'] {sys.executable}\n"
    assert build_command({"script": "t.py", "arguments": ["--n", 3]}, "/py") == ["/py", "t.py", "--n", "3"]


def test_a_run_that_cannot_be_prepared_is_reported_failed(tmp_path):
    runner, api = make_runner(tmp_path, {}, None)

    assert runner.execute() == 0

    assert api.status_names() == ["Preparing", "Failed"]
    assert api.statuses[-1]["error"]["message"].startswith("preparing the run failed: the run has no run_config")


def test_an_unreachable_service_at_the_start_gives_a_nonzero_exit(tmp_path):
    runner, api = make_runner(tmp_path, {"t.py": "print(1)"}, {"script": "t.py"})
    api.fail = lambda method, path, body: ServiceUnavailableError("cannot reach the service")

    assert runner.execute() == 1
    assert api.statuses == []


def test_a_service_lost_during_the_run_is_never_told_completed(tmp_path):
    runner, api = make_runner(tmp_path, {"t.py": "print('done')"}, {"script": "t.py"})
    api.fail = lambda method, path, body: (ServiceUnavailableError("cannot reach the service")
                                           if "Running" in api.status_names() else None)

    assert runner.execute() == 1
    assert api.status_names() == ["Preparing", "Running"]


def test_a_final_status_that_cannot_be_delivered_gives_a_nonzero_exit(tmp_path):
    runner, api = make_runner(tmp_path, {"t.py": "print('done')"}, {"script": "t.py"})
    api.fail = lambda method, path, body: (ServiceUnavailableError("cannot reach the service")
                                           if body and body.get("status") == "Completed" else None)

    assert runner.execute() == 1
    assert "Completed" not in api.status_names()


def test_a_run_canceled_while_the_script_runs_stops_the_script_quietly(tmp_path):
    script = "import time\nfor i in range(300):\n    print(i)\n    time.sleep(0.1)\n"
    runner, api = make_runner(tmp_path, {"slow.py": script}, {"script": "slow.py"})

    def canceled_once_logging(method, path, body):
        if "/logs/" in path:
            api.details["status"] = "Canceled"
            return ConflictError("run is Canceled: its logs are closed")
        return None

    api.fail = canceled_once_logging
    started = time.monotonic()

    assert runner.execute() == 0

    assert time.monotonic() - started < 8
    assert api.status_names() == ["Preparing", "Running"]
    assert runner._script.process.poll() is not None


def test_a_refused_token_at_finalizing_means_the_run_ended_elsewhere(tmp_path):
    runner, api = make_runner(tmp_path, {"t.py": "print(1)"}, {"script": "t.py"})
    api.fail = lambda method, path, body: (AuthenticationError("token no longer valid")
                                           if body and body.get("status") == "Finalizing" else None)

    assert runner.execute() == 0
    assert api.status_names() == ["Preparing", "Running"]
    assert api.uploads == {} and not any(path.endswith("/metrics") for _, path, _ in api.calls)


def test_stopping_the_runner_stops_the_script_and_leaves_the_status(tmp_path):
    script = "import time\nprint('started', flush=True)\ntime.sleep(30)\n"
    runner, api = make_runner(tmp_path, {"sleep.py": script}, {"script": "sleep.py"})
    threading.Timer(0.7, runner.stop).start()
    started = time.monotonic()

    assert runner.execute() == EXIT_STOPPED

    assert time.monotonic() - started < 8
    assert api.status_names() == ["Preparing", "Running"]
    assert api.log_text("stdout") == "started\n"


def test_main_needs_the_job_environment(monkeypatch, capsys):
    for name in ("NIMBUS_URL", "NIMBUS_RUN_TOKEN", "NIMBUS_WORKSPACE", "NIMBUS_RUN_ID"):
        monkeypatch.delenv(name, raising=False)

    assert main() == 2
    assert "NIMBUS_URL" in capsys.readouterr().err


@pytest.mark.parametrize("config", [{"script": "s.py", "arguments": ["a b"]}, {"command": "python s.py 'a b'"}])
def test_build_command_keeps_arguments_whole(config):
    assert build_command(config, "/env/python") == ["/env/python", "s.py", "a b"]


# --- runner identity --------------------------------------------------------------------------------
def test_reports_and_beats_name_this_runner_and_its_batch_attempt(tmp_path):
    runner, api = make_runner(tmp_path, {"t.py": "import time; time.sleep(0.6)"}, {"script": "t.py"}, attempt=3)
    runner.heartbeat_s = 0.05

    assert runner.execute() == 0

    assert api.status_names() == ["Preparing", "Running", "Finalizing", "Completed"]
    assert {(s["runner_id"], s["attempt"]) for s in api.statuses} == {(runner.runner_id, 3)}
    assert api.beats and all(b["attempt"] == 3 and b.get("runner_id") in (None, runner.runner_id) for b in api.beats)
    assert api.beats[-1]["runner_id"] == runner.runner_id  # once the run is its own
    other, _ = make_runner(tmp_path, {}, None)
    assert other.runner_id != runner.runner_id


@pytest.mark.parametrize("holder, attempt, exit_code", [
    ("runner-other", 1, 0),  # another runner of this attempt holds the run: it is that runner's
    (None, 2, 0),  # a later attempt holds it
    (None, None, EXIT_UNREPORTED),  # nobody holds it, yet it was refused: this runner cannot run it either
])
def test_a_refused_first_preparing_never_runs_the_script_nor_touches_the_run(tmp_path, holder, attempt, exit_code):
    runner, api = make_runner(tmp_path, {"t.py": "open('ran', 'w')"}, {"script": "t.py"})
    api.details.update(status="Running", runner_id=holder, attempt=attempt)
    api.fail = lambda method, path, body: (ConflictError("run is held by another runner")
                                           if path.endswith("/status") else None)

    assert runner.execute() == exit_code

    assert [body["status"] for method, path, body in api.calls if path.endswith("/status")] == ["Preparing"]
    assert not any("/snapshots/" in path or "/logs/" in path for method, path, body in api.calls)
    assert not (tmp_path / "code" / "ran").exists()


@pytest.mark.parametrize("refusal", [ConflictError("run is on attempt 2"), AuthenticationError("token revoked")])
def test_a_refused_beat_stops_the_script_and_the_runner_reports_nothing_more(tmp_path, refusal):
    # Given a script that runs for long
    script = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
    runner, api = make_runner(tmp_path, {"slow.py": script}, {"script": "slow.py"})
    runner.heartbeat_s = 0.1

    # When, once it runs, the service refuses the beats: a later attempt took the run over, or (an agent's
    # lease that lapsed) the run's token was handed to another runner
    def taken_over(method, path, body):
        if path.endswith("/heartbeat") and "Running" in api.status_names():
            api.details.update(attempt=2, runner_id="runner-other")
            return refusal
        return None

    api.fail = taken_over
    started = time.monotonic()

    # Then the script is stopped and the runner leaves the run as it is
    assert runner.execute() == 0
    assert time.monotonic() - started < 8
    assert runner._script.process.poll() is not None
    assert api.status_names() == ["Preparing", "Running"]
    assert api.uploads == {} and api.metrics == {}


def test_the_batch_attempt_comes_from_the_job_environment():
    env = {"NIMBUS_URL": "http://x", "NIMBUS_RUN_TOKEN": "t", "NIMBUS_WORKSPACE": "w", "NIMBUS_RUN_ID": "r"}
    assert JobSettings.from_env(env).attempt == 1
    assert JobSettings.from_env({**env, "AWS_BATCH_JOB_ATTEMPT": "2"}).attempt == 2
    for bad in ("0", "two", "-1", "²"):
        with pytest.raises(ConfigurationError, match="AWS_BATCH_JOB_ATTEMPT"):
            JobSettings.from_env({**env, "AWS_BATCH_JOB_ATTEMPT": bad})


# --- a sealed run token (AWS Batch with the stage's KMS key) ----------------------------------------
def _sealed_env(run_id: str, token: str = "nmb_sealed", sealed_for: str | None = None) -> dict[str, str]:
    """The job environment Batch gives a runner whose token the API sealed (call inside aws_env)."""
    import boto3

    kms = boto3.client("kms", region_name="us-east-1")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    return {"NIMBUS_URL": "http://x", "NIMBUS_WORKSPACE": WS, "NIMBUS_RUN_ID": run_id, "AWS_REGION": "us-east-1",
            sealed_token.SEALED_ENV: sealed_token.sealed_value(
                kms.encrypt(**sealed_token.encrypt_request(key, sealed_for or run_id, token)))}


def test_a_sealed_token_is_opened_with_kms_and_handed_to_the_script_in_clear(aws_env):
    env = _sealed_env("run1", "nmb_opened")

    settings = JobSettings.from_env(env)

    assert settings.token == "nmb_opened" and settings.run_id == "run1"
    assert settings.script_env()["NIMBUS_RUN_TOKEN"] == "nmb_opened"  # what Run.get_context() reads


def test_a_clear_token_is_used_as_it_is_without_kms():
    class NoKms:
        def decrypt(self, **kwargs):
            raise AssertionError("KMS was called")

    env = {"NIMBUS_URL": "http://x", "NIMBUS_RUN_TOKEN": "nmb_clear", "NIMBUS_WORKSPACE": WS, "NIMBUS_RUN_ID": "r",
           sealed_token.SEALED_ENV: "c2VhbGVk"}
    assert JobSettings.from_env(env, kms=NoKms()).token == "nmb_clear"


@pytest.mark.parametrize("change, reason", [
    ({"NIMBUS_RUN_ID": "run2"}, "does not open for run run2"),  # sealed for run1
    ({sealed_token.SEALED_ENV: "not base64!"}, "NIMBUS_RUN_TOKEN_SEALED is not base64"),
    ({"AWS_REGION": ""}, "needs the AWS region"),
])
def test_a_sealed_token_that_cannot_be_opened_stops_the_runner_with_exit_code_2(aws_env, monkeypatch, capsys,
                                                                                change, reason):
    env = {**_sealed_env("run1"), **change}
    monkeypatch.delenv("NIMBUS_RUN_TOKEN", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main() == 2

    err = capsys.readouterr().err
    assert "the run token cannot be opened" in err and reason in err, err


def test_kms_refusing_the_runner_role_is_reported_with_its_reason():
    from botocore.exceptions import ClientError

    class Refusing:
        def decrypt(self, **kwargs):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "Decrypt")

    env = {"NIMBUS_URL": "http://x", "NIMBUS_WORKSPACE": WS, "NIMBUS_RUN_ID": "r", sealed_token.SEALED_ENV: "c2VhbGVk"}
    with pytest.raises(ConfigurationError, match="may not decrypt NIMBUS_RUN_TOKEN_SEALED \\(not allowed\\)"):
        JobSettings.from_env(env, kms=Refusing())
