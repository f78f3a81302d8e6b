"""The `nimbus` command line: JSON output, tables, errors and exit codes."""
from __future__ import annotations

import json
import re
import math
import stat
import subprocess
import sys
import zipfile

import pytest
from click.testing import CliRunner

from nimbus import Experiment
from nimbus.cli.main import cli


@pytest.fixture
def finished_run(workspace, tmp_path):
    with Experiment(workspace, "cli").start_logging(display_name="best", tags={"team": "a"}) as run:
        run.log("acc", 0.5)
        run.log("acc", 0.75)
        run.log("loss", math.nan)
        run.append_log("epoch 1\nepoch 2\n")
        run.upload_file("model/weights.bin", _file(tmp_path / "w.bin", b"weights"))
    return run


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


def test_workspace_list_as_json(nimbus):
    assert nimbus("workspace", "list", "-o", "json", json_output=True) == [{"name": "default", "role": "owner"}]


def test_workspace_list_as_a_table(nimbus):
    result = nimbus("workspace", "list")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["NAME     ROLE", "default  owner"]


def test_run_show_as_json(nimbus, finished_run):
    shown = nimbus("run", "show", finished_run.id, "--output", "json", json_output=True)
    assert shown["id"] == finished_run.id and shown["status"] == "Completed"
    assert shown["tags"] == {"team": "a"} and shown["display_name"] == "best"


def test_run_metrics_as_json_keeps_non_finite_values_strict(nimbus, finished_run):
    result = nimbus("run", "metrics", finished_run.id, "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"acc": [0.5, 0.75], "loss": "NaN"}
    assert nimbus("run", "metrics", finished_run.id, "--name", "acc", "-o", "json", json_output=True) == \
        {"acc": [0.5, 0.75]}


def test_run_metrics_as_a_table(nimbus, finished_run):
    lines = nimbus("run", "metrics", finished_run.id).stdout.splitlines()
    assert lines == ["NAME  VALUES  LAST", "acc   2       0.75", "loss  1       NaN"]


def test_a_missing_run_is_one_error_line(nimbus):
    result = nimbus("run", "show", "nosuchrun")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: run 'nosuchrun' not found in workspace 'default'\n"


def test_a_bad_token_is_one_error_line(nimbus):
    result = nimbus("whoami", token="nmb_" + "x" * 43)
    assert (result.exit_code, result.stderr) == (1, "error: invalid or revoked token\n")


def test_usage_errors_exit_2(nimbus):
    result = nimbus("run", "list")
    assert result.exit_code == 2 and "Missing option '-e' / '--experiment'" in result.stderr


def test_logs_follow_exits_0_for_a_completed_run(nimbus, finished_run):
    result = nimbus("run", "logs", finished_run.id, "--follow", "--interval", "0.05")
    assert (result.exit_code, result.stdout) == (0, "epoch 1\nepoch 2\n")


def test_logs_follow_exits_3_for_a_failed_run_and_says_how_long_it_ran(nimbus, workspace):
    run = Experiment(workspace, "cli").start_logging()
    run.append_log("starting\n")
    run.fail("diverged")
    result = nimbus("run", "logs", run.id, "-f", "--interval", "0.05")
    assert (result.exit_code, result.stdout) == (3, "starting\n")
    assert re.fullmatch(rf"run {run.id} Failed after \d+\.\d s: diverged\n", result.stderr), result.stderr


def test_an_unreachable_service_exits_4(tmp_path, monkeypatch):
    monkeypatch.setenv("NIMBUS_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("NIMBUS_TOKEN", "nmb_" + "x" * 43)
    monkeypatch.setenv("NIMBUS_CONFIG", str(tmp_path / "profile.json"))
    result = CliRunner(mix_stderr=False).invoke(cli, ["workspace", "list"])
    assert result.exit_code == 4 and result.stderr.startswith("error: cannot reach http://127.0.0.1:9"), result.stderr


def test_logs_without_follow_print_what_is_there(nimbus, workspace):
    run = Experiment(workspace, "cli").start_logging()
    run.append_log("partial\n")
    result = nimbus("run", "logs", run.id)
    assert (result.exit_code, result.stdout) == (0, "partial\n")


def test_logs_as_json(nimbus, workspace, finished_run):
    whole = nimbus("run", "logs", finished_run.id, "-o", "json", json_output=True)
    assert whole == {"run": finished_run.id, "stream": "stdout", "text": "epoch 1\nepoch 2\n", "next_offset": 16}
    followed = nimbus("run", "logs", finished_run.id, "-f", "--interval", "0.05", "-o", "json")
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    assert "".join(line.get("text", "") for line in lines) == "epoch 1\nepoch 2\n"
    assert lines[-1] == {"run": finished_run.id, "stream": "stdout", "status": "Completed"}


def test_run_list_filters(nimbus, workspace):
    for accuracy in (0.2, 0.8):
        with Experiment(workspace, "cli").start_logging(display_name=f"acc-{accuracy}") as run:
            run.log("acc", accuracy)
    listed = nimbus("run", "list", "-e", "cli", "--metric", "acc>0.5", "--order-by", "metrics.acc desc",
                    "-o", "json", json_output=True)
    assert [r["display_name"] for r in listed] == ["acc-0.8"]
    table = nimbus("run", "list", "-e", "cli", "--status", "Completed", "--max-results", "1").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "STATUS"] and len(table) == 2


def test_run_download_files_and_zip(nimbus, finished_run, tmp_path):
    target = tmp_path / "dl"
    result = nimbus("run", "download", finished_run.id, "--output-dir", str(target), "-o", "json", json_output=True)
    assert result == {"files": [str(target / "model" / "weights.bin")]}
    assert (target / "model" / "weights.bin").read_bytes() == b"weights"
    zipped = nimbus("run", "download", finished_run.id, "-d", str(target), "--zip", "-o", "json", json_output=True)
    with zipfile.ZipFile(zipped["zip"]) as archive:
        assert archive.read("model/weights.bin") == b"weights"


def test_run_cancel(nimbus, workspace):
    run = Experiment(workspace, "cli").start_logging()
    assert nimbus("run", "cancel", run.id, "-o", "json", json_output=True) == {"id": run.id, "status": "Canceled"}
    again = nimbus("run", "cancel", run.id)
    assert again.exit_code == 0  # cancelling twice is harmless


def test_workspace_lifecycle_and_members(nimbus, user_token):
    user_token("bob")
    assert nimbus("workspace", "create", "team", "-o", "json", json_output=True)["role"] == "owner"
    added = nimbus("workspace", "member", "add", "bob", "--role", "reader", "-w", "team", "-o", "json",
                   json_output=True)
    assert added["role"] == "reader"
    members = nimbus("workspace", "member", "list", "-w", "team", "-o", "json", json_output=True)
    assert sorted(m["user"] for m in members) == ["admin", "bob"]
    assert nimbus("workspace", "member", "remove", "bob", "-w", "team").exit_code == 0
    assert nimbus("workspace", "show", "team", "-o", "json", json_output=True)["name"] == "team"
    assert nimbus("workspace", "delete", "team", "-o", "json", json_output=True)["deleted"] is True


def test_experiments(nimbus, finished_run):
    listed = nimbus("experiment", "list", "-o", "json", json_output=True)
    assert [(e["name"], e["run_count"]) for e in listed] == [("cli", 1)]
    assert nimbus("experiment", "show", "cli", "-o", "json", json_output=True)["run_count"] == 1
    missing = nimbus("experiment", "show", "nope")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: experiment 'nope' not found")


def test_users_and_tokens(nimbus):
    created = nimbus("user", "create", "carol", "-o", "json", json_output=True)
    assert created["name"] == "carol" and created["is_admin"] is False
    assert [u["name"] for u in nimbus("user", "list", "-o", "json", json_output=True)] == ["admin", "carol"]
    token = nimbus("token", "create", "--user", "carol", "--name", "laptop", "-o", "json", json_output=True)
    assert token["token"].startswith("nmb_") and token["user"] == "carol"
    me = nimbus("whoami", "-o", "json", token=token["token"], json_output=True)
    assert me["user"] == "carol" and me["is_admin"] is False
    refused = nimbus("user", "list", token=token["token"])
    assert (refused.exit_code, refused.stderr) == (1, "error: only an admin can do this\n")


def test_login_checks_and_saves_a_private_profile(platform, tmp_path, monkeypatch):
    runner = CliRunner(mix_stderr=False)
    bad = runner.invoke(cli, ["login", "--url", platform.url, "--token", "nmb_" + "y" * 43])
    assert bad.exit_code == 1 and bad.stderr == "error: invalid or revoked token\n"

    result = runner.invoke(cli, ["login", "--url", platform.url, "--token", platform.token, "-w", "default"])
    assert result.exit_code == 0, result.stderr
    profile = tmp_path / "config" / "profile.json"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    assert json.loads(profile.read_text()) == {"url": platform.url, "token": platform.token, "workspace": "default"}
    me = json.loads(runner.invoke(cli, ["whoami", "-o", "json"]).stdout)
    assert me["user"] == "admin" and me["source"].startswith("profile ")


def test_nothing_configured(tmp_path):
    result = CliRunner(mix_stderr=False).invoke(cli, ["workspace", "list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no Nimbus service URL is configured: run `nimbus up`")


def test_up_serves_the_local_platform(monkeypatch, tmp_path):
    import chalicelib.local.platform as local_platform

    calls = []
    monkeypatch.setattr(local_platform, "serve", lambda home, host, port: calls.append((home, host, port)))
    result = CliRunner().invoke(cli, ["up", "--port", "8123", "--home", str(tmp_path / "h")])
    assert result.exit_code == 0 and calls == [(tmp_path / "h", "127.0.0.1", 8123)]


LOUD_COMMAND = """
import click
from nimbus.cli.common import NimbusGroup

@click.group(cls=NimbusGroup)
def root():
    pass

@root.command()
def loud():
    for number in range(200_000):
        click.echo(f"line {number}")

root(["loud"])
"""


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    # Given a command printing far more than a pipe holds, read as `| head -1` would
    process = subprocess.Popen([sys.executable, "-c", LOUD_COMMAND], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline() == b"line 0\n"
    process.stdout.close()  # the reader goes away
    # Then the command ends with SIGPIPE's status and no error line
    stderr = process.communicate(timeout=60)[1]
    assert (process.returncode, stderr) == (141, b"")

