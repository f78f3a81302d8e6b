"""ScriptRunConfig validation and files, and what Experiment.submit sends (against a fake service)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nimbus import ScriptRunConfig
from nimbus.cli.run_cmds import run as run_group
from nimbus.client import ApiClient
from nimbus.exceptions import InvalidError, ServiceUnavailableError
from nimbus.experiment import Experiment
from nimbus.workspace import Workspace


# --- validation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, field", [
    ({}, "script"),
    ({"script": "a.py", "command": "echo hi"}, "script"),
    ({"script": "/abs/train.py"}, "script"),
    ({"script": "../outside.py"}, "script"),
    ({"script": "sub/../../outside.py"}, "script"),
    ({"command": "   "}, "command"),
    ({"script": "a.py", "arguments": "--lr 1"}, "arguments"),
    ({"script": "a.py", "arguments": ["--lr", None]}, "arguments[1]"),
    ({"script": "a.py", "arguments": [True]}, "arguments[0]"),
    ({"script": "a.py", "compute_target": "GPU cluster"}, "compute_target"),
    ({"script": "a.py", "node_count": 0}, "node_count"),
    ({"script": "a.py", "process_count_per_node": 65}, "process_count_per_node"),
    ({"script": "a.py", "resources": {"vcpus": 0}}, "resources.vcpus"),
    ({"script": "a.py", "resources": {"memory_mb": 1.5}}, "resources.memory_mb"),
    ({"script": "a.py", "resources": {"disk": 1}}, "resources"),
    ({"script": "a.py", "environment": ""}, "environment"),
    ({"script": "a.py", "environment_variables": {"1BAD": "x"}}, "environment_variables"),
    ({"script": "a.py", "environment_variables": {"BAD-NAME": "x"}}, "environment_variables"),
    ({"script": "a.py", "environment_variables": {"OK": 1}}, "environment_variables.OK"),
    ({"script": "a.py", "max_run_duration_seconds": 0}, "max_run_duration_seconds"),
    ({"script": "a.py", "max_run_duration_seconds": 1.5}, "max_run_duration_seconds"),
    ({"script": "a.py", "max_run_duration_seconds": True}, "max_run_duration_seconds"),
])
def test_invalid_settings_name_the_field(settings, field):
    with pytest.raises(InvalidError) as error:
        ScriptRunConfig(**settings)
    assert error.value.field == field and str(error.value).startswith(field)


def test_wire_form_normalises_script_and_arguments():
    config = ScriptRunConfig(source_directory=Path("src"), script="./pkg\\train.py", arguments=["--lr", 0.1, 3],
                             environment_variables={"SEED": "1"}, max_run_duration_seconds=600)
    assert config.source_directory == "src"
    assert config.to_dict() == {"script": "pkg/train.py", "command": None, "arguments": ["--lr", "0.1", "3"],
                                "compute": "local", "environment": None, "environment_variables": {"SEED": "1"},
                                "max_run_duration_s": 600, "node_count": 1, "process_count_per_node": 1,
                                "resources": None}


def test_command_may_be_given_as_a_list():
    assert ScriptRunConfig(command=["python", "-c", "print('hi there')"]).command == \
        "python -c 'print('\"'\"'hi there'\"'\"')'"


def test_script_must_exist_inside_the_source_folder_at_submit_time(tmp_path):
    (tmp_path / "train.py").write_text("")
    ScriptRunConfig(source_directory=tmp_path, script="train.py").check_files()
    with pytest.raises(InvalidError) as error:
        ScriptRunConfig(source_directory=tmp_path, script="missing.py").check_files()
    assert error.value.field == "script"
    with pytest.raises(InvalidError) as error:
        ScriptRunConfig(source_directory=tmp_path / "nope", script="train.py").check_files()
    assert error.value.field == "source_directory"


def test_script_linking_out_of_the_source_folder_is_refused(tmp_path):
    (tmp_path / "outside.py").write_text("")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").symlink_to(tmp_path / "outside.py")
    with pytest.raises(InvalidError, match="outside"):
        ScriptRunConfig(source_directory=tmp_path / "src", script="train.py").check_files()


# --- files ----------------------------------------------------------------------------------------------
def test_yaml_round_trip(tmp_path):
    config = ScriptRunConfig(source_directory=tmp_path, script="train.py", arguments=["--epochs", 3],
                             environment="py311", environment_variables={"A": "1"}, max_run_duration_seconds=60)
    written = config.save("nightly")
    assert written == tmp_path / ".nimbus" / "nightly.runconfig.yml"
    assert "source_directory" not in yaml.safe_load(written.read_text())
    loaded = ScriptRunConfig.load(written)
    assert loaded.to_dict() == config.to_dict()
    assert Path(loaded.source_directory) == tmp_path


def test_relative_source_directory_in_a_file_is_taken_from_the_file(tmp_path):
    path = tmp_path / "configs" / "job.yml"
    path.parent.mkdir()
    path.write_text("source_directory: ../code\ncommand: make train\n")
    loaded = ScriptRunConfig.load(path)
    assert Path(loaded.source_directory) == tmp_path / "code" and loaded.command == "make train"


def test_unknown_keys_are_refused_by_name(tmp_path):
    path = tmp_path / "job.yml"
    path.write_text("script: a.py\ncompute: local\nargs: []\n")
    with pytest.raises(InvalidError, match="args, compute"):
        ScriptRunConfig.load(path)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "job.yml"
    path.write_text("- a.py\n")
    with pytest.raises(InvalidError, match="mapping"):
        ScriptRunConfig.load(path)


def test_bad_config_name_is_refused(tmp_path):
    with pytest.raises(InvalidError) as error:
        ScriptRunConfig(source_directory=tmp_path, script="a.py").save("../escape")
    assert error.value.field == "name"


# --- submission --------------------------------------------------------------------------------------------
class FakeService:
    """Stands in for the HTTP exchange: snapshots and runs answered in memory, the first run POST fails."""

    def __init__(self, fail_first_runs_post: bool = False):
        self.calls: list[tuple[str, str, dict]] = []
        self.puts: list[str] = []
        self.failures_left = 1 if fail_first_runs_post else 0

    def exchange(self, method, url, body, headers):
        data = json.loads(body) if body else None
        path = url.split("://", 1)[1].split("/", 1)[1]
        self.calls.append((method, "/" + path, data))
        if path.endswith("snapshots/uploads"):
            reply = {"uploads": [{"digest": f["digest"], "url": f"https://blob/{f['digest']}"} for f in data["files"]]}
        elif path.endswith("snapshots"):
            reply = {"id": "a" * 64, "file_count": len(data["files"]), "total_bytes": 1}
        elif path.endswith("runs"):
            if self.failures_left:
                self.failures_left -= 1
                raise ServiceUnavailableError("cannot reach the service")
            reply = {"id": "run-1", "status": "Queued", "experiment": data["experiment"]}
        else:
            raise AssertionError(f"unexpected {method} {url}")
        return 200, json.dumps(reply).encode(), "OK"

    def upload(self, url, source, progress=None):
        self.puts.append(url)
        return Path(source).stat().st_size

    def runs_posts(self) -> list[dict]:
        return [body for method, path, body in self.calls if path.endswith("/runs")]


@pytest.fixture
def service(monkeypatch):
    fake = FakeService(fail_first_runs_post=True)
    monkeypatch.setattr(ApiClient, "_exchange", lambda self, *args: fake.exchange(*args))
    monkeypatch.setattr(ApiClient, "upload", lambda self, *args: fake.upload(*args))
    monkeypatch.setattr("nimbus.client.backoff", lambda attempt: 0)
    for name in ("GITHUB_ACTIONS", "GITLAB_CI", "CI"):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_submit_sends_snapshot_config_and_provenance(tmp_path, service, monkeypatch):
    (tmp_path / "train.py").write_text("print('hi')\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    workspace = Workspace("team", client=ApiClient("http://nimbus.test", "nmb_x"))
    config = ScriptRunConfig(source_directory=tmp_path, script="train.py", arguments=["--lr", 0.5])
    submitted = Experiment(workspace, "mnist").submit(config, tags={"epochs": 3}, show_progress=False)

    assert submitted.id == "run-1" and submitted.status == "Queued"
    assert len(service.puts) == 1
    first, retried = service.runs_posts()
    assert first == retried  # the retry carries the same client_token
    assert first["client_token"] and len(first["client_token"]) == 32
    assert first["experiment"] == "mnist" and first["snapshot_id"] == "a" * 64
    assert first["run_config"] == config.to_dict() and first["run_config"]["arguments"] == ["--lr", "0.5"]
    assert first["tags"] == {"epochs": "3"}
    assert first["ci"] == {"provider": "github", "run_id": "42"}
    assert "git" in first  # None here unless the temporary folder sits in a checkout
    assert [path for _, path, _ in service.calls[:2]] == ["/v1/workspaces/team/snapshots/uploads",
                                                         "/v1/workspaces/team/snapshots"]


def test_submit_uses_the_given_client_token(tmp_path, service):
    (tmp_path / "train.py").write_text("")
    workspace = Workspace("team", client=ApiClient("http://nimbus.test", "nmb_x"))
    Experiment(workspace, "e").submit(ScriptRunConfig(source_directory=tmp_path, script="train.py"),
                                      client_token="nightly-2024-01-01", show_progress=False)
    assert [body["client_token"] for body in service.runs_posts()] == ["nightly-2024-01-01"] * 2


def test_submit_checks_the_script_before_uploading(tmp_path, service):
    workspace = Workspace("team", client=ApiClient("http://nimbus.test", "nmb_x"))
    with pytest.raises(InvalidError, match="missing.py"):
        Experiment(workspace, "e").submit(ScriptRunConfig(source_directory=tmp_path, script="missing.py"))
    assert service.calls == []


# --- the command line's configuration --------------------------------------------------------------------
@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_submit(self, config, tags=None, client_token=None, show_progress=None):
        from nimbus.experiment import Run

        seen.update(config=config, tags=tags, experiment=self.name)
        return Run(self.workspace, "run-9", details={"id": "run-9", "status": "Queued", "experiment": self.name})

    monkeypatch.setattr(Experiment, "submit", fake_submit)
    monkeypatch.setattr("nimbus.cli.run_cmds.connect",
                        lambda name: Workspace(name or "default", client=ApiClient("http://x", "t")))
    return seen


def test_cli_passes_everything_after_the_script_to_it(tmp_path, captured):
    (tmp_path / "train.py").write_text("")
    result = CliRunner().invoke(run_group, ["submit", "-e", "mnist", "--source-dir", str(tmp_path), "--tag", "a=b=c",
                                            "-o", "json", "train.py", "--lr", "0.1", "-e", "x"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["id"] == "run-9"
    assert captured["config"].arguments == ["--lr", "0.1", "-e", "x"] and captured["experiment"] == "mnist"
    assert captured["tags"] == {"a": "b=c"}


def test_cli_flags_override_the_run_configuration(tmp_path, captured):
    saved = ScriptRunConfig(source_directory=tmp_path, script="old.py", arguments=["1"],
                            environment_variables={"K": "v"}).save("job")
    result = CliRunner().invoke(run_group, ["submit", "-e", "e", "--run-config", str(saved), "new.py", "2"])
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert (config.script, config.arguments, config.environment_variables) == ("new.py", ["2"], {"K": "v"})
    assert Path(config.source_directory) == tmp_path


def test_cli_needs_a_script_or_a_run_configuration(captured):
    result = CliRunner().invoke(run_group, ["submit", "-e", "e"])
    assert result.exit_code == 2 and "SCRIPT" in result.output
