"""`nimbus deploy` and `nimbus endpoint ...`: against an in-memory stand-in for the endpoints routes, then live."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nimbus.cli.main import cli
from tests.client.unit.fake_endpoints import USER_TOKEN, FakeEndpoints


@pytest.fixture
def service(monkeypatch) -> FakeEndpoints:
    return FakeEndpoints().install(monkeypatch)


@pytest.fixture
def fake_cli(service):
    """Runs `nimbus ARGS...` against the in-memory service; asserts success unless ok=False."""
    runner = CliRunner(mix_stderr=False)
    env = {"NIMBUS_URL": "http://nimbus.test", "NIMBUS_TOKEN": USER_TOKEN, "NIMBUS_WORKSPACE": "team"}

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.stderr
        return result

    return invoke


@pytest.fixture
def source(tmp_path):
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (tmp_path / "broken.py").write_text("import missing\n")
    return tmp_path


@pytest.fixture
def deployed(fake_cli, source):
    fake_cli("deploy", "blue", "--endpoint", "iris", "--model", "iris:1", "--entry-script", str(source / "score.py"))
    fake_cli("deploy", "green", "--endpoint", "iris", "--model", "iris:2", "--entry-script", str(source / "score.py"))
    return "iris"


def test_deploy_prints_state_host_and_scoring_uri(fake_cli, service, source):
    result = fake_cli("deploy", "blue", "--endpoint", "iris", "--model", "iris:1", "--model", "digits:prod",
                    "--source-dir", str(source), "--entry-script", "score.py", "--memory-mb", "512",
                    "--max-instances", "3", "--capture-rate", "0.5", "--environment", "py311")
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["state"].strip() == "Succeeded" and lines["host_url"].strip() == "http://127.0.0.1:40001"
    assert lines["scoring_uri"].strip() == "http://nimbus.test/v1/workspaces/team/endpoints/iris/score"
    sent = service.endpoints["iris"]["deployments"]["blue"]
    assert sent["models"] == ["iris:1", "digits:prod"] and sent["environment"] == "py311"
    assert sent["config"] == {"memory_mb": 512, "timeout_s": 60, "reserved_concurrency": None,
                              "provisioned_concurrency": None, "min_instances": 0, "max_instances": 3,
                              "capture_rate": 0.5}


def test_deploy_json_is_the_deployment_with_its_scoring_uri(fake_cli, source):
    view = json.loads(fake_cli("deploy", "iris", "--model", "iris:1", "--entry-script", str(source / "score.py"),
                             "-o", "json").stdout)
    assert view["endpoint"] == "iris" and view["name"] == "iris" and view["revision"] == 1
    assert view["scoring_uri"].endswith("/endpoints/iris/score") and view["host"]["port"] == 40001


def test_a_failed_deployment_ends_with_its_error(fake_cli, source):
    result = fake_cli("deploy", "blue", "--model", "iris:1", "--entry-script", str(source / "broken.py"), ok=False)
    assert result.exit_code == 3  # what was waited for did not succeed (docs/ci.md)
    assert result.stderr.startswith("error: deployment 'blue' of endpoint 'blue' Failed: ImportError")


def test_deploy_waits_for_the_rollout_unless_told_not_to(fake_cli, service, source):
    (source / "slow.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    waited = fake_cli("deploy", "blue", "--model", "iris:1", "--entry-script", str(source / "slow.py"),
                      "--poll-seconds", "0.01")
    assert "deployment 'blue' of endpoint 'blue' is Creating; waiting" in waited.stderr
    lines = dict(line.split(":", 1) for line in waited.stdout.splitlines())
    assert lines["state"].strip() == "Succeeded" and "step" not in lines

    answered = fake_cli("deploy", "blue", "--model", "iris:2", "--entry-script", str(source / "slow.py"), "--no-wait")
    lines = dict(line.split(":", 1) for line in answered.stdout.splitlines())
    assert (lines["state"].strip(), lines["step"].strip(), lines["revision"].strip()) == ("Updating", "publish", "2")
    assert answered.stderr == ""


def test_a_rollout_that_fails_or_outlasts_the_wait_ends_non_zero(fake_cli, service, source):
    (source / "late_broken.py").write_text("import missing\n")
    failed = fake_cli("deploy", "blue", "--model", "iris:1", "--entry-script", str(source / "late_broken.py"),
                      "--poll-seconds", "0.01", ok=False)
    assert failed.exit_code == 3 and "error: deployment 'blue' of endpoint 'blue' Failed: ImportError" in failed.stderr

    service.looks = 10**9
    (source / "slow.py").write_text("")
    timed_out = fake_cli("deploy", "green", "--model", "iris:1", "--entry-script", str(source / "slow.py"),
                         "--timeout-seconds", "1", "--poll-seconds", "0.05", ok=False)
    assert timed_out.exit_code == 3 and "still rolling out after 1 s" in timed_out.stderr


@pytest.mark.parametrize("args, field", [
    (["--memory-mb", "64"], "memory_mb"), (["--capture-rate", "2"], "capture_rate"),
    (["--min-instances", "2", "--max-instances", "1"], "max_instances"), (["--model", "iris"], "models[1]"),
])
def test_bad_settings_are_named_before_anything_is_sent(fake_cli, service, source, args, field):
    result = fake_cli("deploy", "blue", "--model", "iris:1", "--entry-script", str(source / "score.py"), *args, ok=False)
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {field} ")
    assert service.calls == []


def test_list_and_show_with_telemetry(fake_cli, deployed):
    listing = fake_cli("endpoint", "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "STATE", "DEPLOYMENTS", "TRAFFIC", "CREATED"]
    assert listing[1].split()[:3] == ["iris", "Succeeded", "[blue,"]
    assert [e["name"] for e in json.loads(fake_cli("endpoint", "list", "-o", "json").stdout)] == ["iris"]

    shown = fake_cli("endpoint", "show", "iris", "--minutes", "15").stdout
    assert "scoring_uri: http://nimbus.test/v1/workspaces/team/endpoints/iris/score" in shown
    assert "telemetry over the last 15 minutes:" in shown
    lines = shown.splitlines()
    table = lines[lines.index("telemetry over the last 15 minutes:") + 1:]
    assert table[0].split() == ["DEPLOYMENT", "STATE", "WEIGHT", "MODELS", "REQUESTS", "ERRORS", "P50", "MS", "P95",
                                "MS"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["blue"][:3] == ["blue", "Succeeded", "100"] and rows["green"][2] == "0"
    assert rows["(all)"] == ["(all)", "3", "1", "4", "9.5"]

    data = json.loads(fake_cli("endpoint", "show", "iris", "-o", "json").stdout)
    assert data["telemetry"]["window_minutes"] == 60 and data["state"] == "Succeeded"
    assert [d["name"] for d in data["deployments"]] == ["blue", "green"]


def test_invoke_sends_the_data_with_the_endpoint_key(fake_cli, service, deployed, tmp_path):
    assert json.loads(fake_cli("endpoint", "invoke", "iris", "--data", '{"data": [1]}').stdout) == {
        "received": '{"data": [1]}'}
    (tmp_path / "request.json").write_text('{"data": [2]}')
    assert json.loads(fake_cli("endpoint", "invoke", "iris", "--data", f"@{tmp_path / 'request.json'}").stdout) == {
        "received": '{"data": [2]}'}
    primary = service.endpoints["iris"]["keys"]["primary_key"]
    assert {call[4]["Authorization"] for call in service.requests("POST", "/score")} == {f"Bearer {primary}"}


def test_invoke_reports_the_scoring_error(fake_cli, deployed):
    result = fake_cli("endpoint", "invoke", "iris", "--data", "boom", ok=False)
    assert result.exit_code == 1 and result.stderr == "error: ValueError: boom\n"


def test_keys_are_printed_only_when_asked(fake_cli, service, deployed):
    keys = service.endpoints["iris"]["keys"]
    for command in (["endpoint", "list"], ["endpoint", "show", "iris"], ["endpoint", "invoke", "iris", "--data", "1"]):
        out = fake_cli(*command).stdout + fake_cli(*command, "-o", "json").stdout
        assert keys["primary_key"] not in out and keys["secondary_key"] not in out
    assert json.loads(fake_cli("endpoint", "keys", "iris", "-o", "json").stdout) == keys
    old_secondary = keys["secondary_key"]
    shown = fake_cli("endpoint", "keys", "iris", "--regenerate", "Secondary").stdout
    assert f"secondary_key: {service.endpoints['iris']['keys']['secondary_key']}" in shown
    assert old_secondary not in shown


def test_traffic_set_and_show(fake_cli, service, deployed):
    assert json.loads(fake_cli("endpoint", "traffic", "iris", "blue=25", "green=75", "-o", "json").stdout) == {
        "blue": 25, "green": 75}
    assert fake_cli("endpoint", "traffic", "iris").stdout.split() == ["DEPLOYMENT", "WEIGHT", "blue", "25", "green",
                                                                    "75"]
    bad = fake_cli("endpoint", "traffic", "iris", "blue=half", ok=False)
    assert bad.exit_code == 2 and "DEPLOYMENT=WEIGHT" in bad.stderr
    bad = fake_cli("endpoint", "traffic", "iris", "blue=50", ok=False)
    assert bad.exit_code == 1 and "sum to 100" in bad.stderr
    assert len(service.requests("PUT", "/traffic")) == 1


def test_logs(fake_cli, deployed):
    assert fake_cli("endpoint", "logs", "iris", "--tail", "7").stdout == "blue: last 7 lines\n"
    assert json.loads(fake_cli("endpoint", "logs", "iris", "--deployment", "green", "-o", "json").stdout) == {
        "logs": "green: last 200 lines\n"}


def test_delete_a_deployment_then_the_endpoint(fake_cli, service, deployed):
    assert json.loads(fake_cli("endpoint", "delete", "iris", "--deployment", "green", "-o", "json").stdout) == {
        "endpoint": "iris", "deployment": "green", "deleted": True}
    assert "deleted:" in fake_cli("endpoint", "delete", "iris").stdout
    assert service.endpoints == {}
    missing = fake_cli("endpoint", "show", "iris", ok=False)
    assert missing.exit_code == 1 and "not exist" in missing.stderr


# --- live: the local platform ---------------------------------------------------------------------------
def test_deploy_invoke_and_delete_on_the_local_platform(nimbus, workspace, tmp_path):
    from nimbus.model import Model

    (tmp_path / "model.json").write_text('{"factor": 3}')
    Model.register(workspace, "factor", tmp_path / "model.json", show_progress=False)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(
        "import json\nfrom nimbus import Model\n\n"
        "def init():\n    global factor\n    factor = json.load(open(Model.get_model_path('factor')))['factor']\n\n"
        "def run(raw_data):\n    return [factor * x for x in json.loads(raw_data)['data']]\n")

    view = nimbus("deploy", "triple", "--model", "factor:1", "--source-dir", str(tmp_path / "src"),
                  "--entry-script", "score.py", "--memory-mb", "256", "-o", "json", json_output=True)
    assert view["state"] == "Succeeded" and view["host"]["host_url"].startswith("http://127.0.0.1:")
    assert nimbus("endpoint", "invoke", "triple", "--data", '{"data": [1, 2]}', json_output=True) == [3, 6]
    shown = nimbus("endpoint", "show", "triple", "-o", "json", json_output=True)
    assert shown["traffic"] == {"triple": 100} and "primary_key" not in json.dumps(shown)
    assert set(nimbus("endpoint", "keys", "triple", "-o", "json", json_output=True)) == {"primary_key",
                                                                                          "secondary_key"}
    assert nimbus("endpoint", "delete", "triple", "-o", "json", json_output=True)["deleted"] is True
    assert nimbus("endpoint", "list", "-o", "json", json_output=True) == []
