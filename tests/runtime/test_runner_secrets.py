"""The runner and secrets: secret_variables read with the run's token, and every value masked in the logs."""
from __future__ import annotations

import uuid

from nimbus.exceptions import NotFoundError
from nimbus.runtime.runner import JobSettings, Runner
from tests.runtime.test_runner import WS, FakeApi, fake_extract

SECRETS = {"db-password": "Pa55-w0rd-runner", "api-key": "key-0123456789"}


class SecretsApi(FakeApi):
    def _answer(self, method, path, body):
        prefix = f"/v1/workspaces/{WS}/runs/{self.run_id}/secrets/"
        if method == "GET" and path.startswith(prefix):
            name = path.removeprefix(prefix)
            if name not in SECRETS:
                raise NotFoundError(f"no secret {name!r} in workspace {WS!r}")
            return {"name": name, "value": SECRETS[name]}
        return super()._answer(method, path, body)


def make_runner(tmp_path, script: str, run_config: dict):
    run_id = uuid.uuid4().hex
    api = SecretsApi(run_id, {"snapshot_id": "snap1", "run_config": run_config}, {"job.py": script})
    settings = JobSettings("http://fake.invalid", "nmb_runtoken", WS, run_id, tmp_path)
    return Runner(settings, api, extract=fake_extract, echo=False), api


def test_secret_variables_reach_the_script_and_are_masked(tmp_path):
    script = ("import os, sys\n"
              "print('token', os.environ['DB_PASSWORD'])\n"
              "print('partly', os.environ['DB_PASSWORD'][:6])\n"
              "print(os.environ['DB_PASSWORD'], file=sys.stderr)\n"
              "sys.exit(0 if os.environ['DB_PASSWORD'] == 'Pa55-w0rd-runner' else 9)\n")
    runner, api = make_runner(tmp_path, script, {"script": "job.py", "secret_variables": {"DB_PASSWORD": "db-password"}})

    assert runner.execute() == 0

    assert api.status_names() == ["Preparing", "Running", "Finalizing", "Completed"]
    assert api.log_text("stdout") == "token ***\npartly Pa55-w\n"  # a part alone is no secret
    assert api.log_text("stderr") == "***\n"
    assert ("GET", f"/v1/workspaces/{WS}/runs/{runner.settings.run_id}/secrets/db-password", None) in api.calls


def test_a_value_read_by_the_script_is_masked_in_its_logs_and_error_report(tmp_path):
    # The script reads through the SDK against the fake service's route, as a submitted script would.
    script = ("import sys\n"
              "from nimbus.runtime.secret_mask import SOCKET_ENV, register_with_runner\n"
              "import os\n"
              "value = 'key-' + '0123456789'\n"  # what Run.get_secret returned, then handed to the runner
              "register_with_runner(value, os.environ[SOCKET_ENV])\n"
              "print('the key is', value)\n"
              "print('failing with', value, file=sys.stderr)\n"
              "sys.exit(2)\n")
    runner, api = make_runner(tmp_path, script, {"script": "job.py"})

    assert runner.execute() == 0

    assert api.log_text("stdout") == "the key is ***\n"
    error = api.statuses[-1]["error"]
    assert error["stderr_tail"] == "failing with ***" and "0123456789" not in str(api.statuses)


def test_a_missing_secret_fails_the_run_before_the_script_starts(tmp_path):
    runner, api = make_runner(tmp_path, "print('never')\n", {"script": "job.py", "secret_variables": {"X": "absent"}})

    assert runner.execute() == 0

    assert api.status_names() == ["Preparing", "Failed"]
    assert api.statuses[-1]["error"]["message"] == "preparing the run failed: no secret 'absent' in workspace 'team'"
    assert api.log_text("stdout") == ""
