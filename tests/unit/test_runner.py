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
    AuthenticationError, ConflictError, NotFoundError, ServiceUnavailableError,
)
from nimbus.runner import EXIT_STOPPED, JobSettings, Runner, build_command, main
from nimbus.runner_io import MAX_APPEND, LogPump

WS = "team"


class FakeApi:
    """Answers the routes the runner uses and records every call; `fail` picks calls to refuse."""

    url = "http://fake.invalid"

    def __init__(self, run_id: str, details: dict, files: dict[str, str]):
        self.run_id, self.details, self.files = run_id, dict(details, id=run_id, status="Queued"), files
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, dict | None]] = []
        self.statuses: list[dict] = []
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
        data = Path(source).read_bytes()
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


def make_runner(tmp_path, files: dict[str, str], run_config: dict | None, **details):
    run_id = uuid.uuid4().hex  # metrics are buffered per process by run: keep tests apart
    if run_config is not None:
        details["run_config"] = run_config
    api = FakeApi(run_id, {"snapshot_id": "snap1", **details}, files)
    settings = JobSettings("http://fake.invalid", "nmb_runtoken", WS, run_id, tmp_path)
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
