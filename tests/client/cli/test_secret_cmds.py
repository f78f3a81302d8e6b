"""`nimbus secret …` against the live in-process platform: values from a file, stdin or (warned) argv."""
from __future__ import annotations

from click.testing import CliRunner

from nimbus.cli.main import cli

VALUE = "pa55-w0rd-from-cli"


def stored(platform, name: str, workspace: str = "default") -> str:
    return platform.services.workspace_secrets.read(workspace, name)


def test_set_from_a_file_list_and_delete(nimbus, platform, tmp_path):
    value_file = tmp_path / "value.txt"
    value_file.write_text(VALUE + "\n")
    result = nimbus("secret", "set", "db-password", "--value-file", str(value_file), "-o", "json", json_output=True)
    assert result["name"] == "db-password" and result["version"] == 1 and "value" not in result
    assert stored(platform, "db-password") == VALUE  # the file's final line end dropped

    table = nimbus("secret", "list")
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split()[:2] == ["NAME", "VERSION"]
    assert table.stdout.splitlines()[1].split()[:2] == ["db-password", "1"] and VALUE not in table.stdout
    assert [s["name"] for s in nimbus("secret", "list", "-o", "json", json_output=True)] == ["db-password"]

    assert nimbus("secret", "delete", "db-password", "-o", "json", json_output=True) == \
        {"name": "db-password", "deleted": True}
    assert nimbus("secret", "list", "-o", "json", json_output=True) == []
    missing = nimbus("secret", "delete", "db-password")
    assert missing.exit_code == 1 and "db-password" in missing.stderr


def test_set_reads_standard_input_by_default(platform, tmp_path):
    runner = CliRunner(mix_stderr=False)
    env = {"NIMBUS_URL": platform.url, "NIMBUS_TOKEN": platform.token}
    result = runner.invoke(cli, ["secret", "set", "api-key"], input=VALUE + "\r\n", env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert VALUE not in result.stdout + result.stderr
    assert stored(platform, "api-key") == VALUE


def test_a_value_on_the_command_line_is_taken_with_a_warning(nimbus, platform):
    result = nimbus("secret", "set", "token", "--value", VALUE)
    assert result.exit_code == 0 and "process list" in result.stderr and VALUE not in result.stdout
    assert stored(platform, "token") == VALUE


def test_errors_name_what_is_wrong(nimbus, tmp_path, user_token, platform):
    value_file = tmp_path / "v"
    value_file.write_text(VALUE)
    bad = nimbus("secret", "set", "bad.name", "--value-file", str(value_file))
    assert bad.exit_code == 1 and "name" in bad.stderr
    both = nimbus("secret", "set", "x", "--value-file", str(value_file), "--value", VALUE)
    assert both.exit_code == 2
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert nimbus("secret", "set", "x", "--value-file", str(empty)).exit_code == 2
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    assert nimbus("secret", "set", "x", "--value-file", str(binary)).exit_code == 2
    # a reader may not set one
    reader = user_token("rita")
    platform.services.workspaces.add_member(platform.services.identity.authenticate(f"Bearer {platform.token}"),
                                            "default", "rita", "reader")
    refused = nimbus("secret", "set", "x", "--value-file", str(value_file), token=reader)
    assert refused.exit_code == 1 and "contributor" in refused.stderr
