"""`nimbus datastore …` against the live in-process platform and a second S3: the secret key from a file or
standard input, never echoed, never shown."""
from __future__ import annotations

from click.testing import CliRunner

from nimbus.cli.main import cli


def test_register_list_show_default_and_delete(nimbus, platform, s3_compatible, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(s3_compatible.secret_access_key + "\n")
    made = nimbus("datastore", "register-s3", "lake", "--bucket", s3_compatible.bucket, "--prefix", "iris",
                  "--endpoint-url", s3_compatible.url, "--access-key-id", s3_compatible.access_key_id,
                  "--secret-access-key-file", str(secret_file), "-o", "json", json_output=True)
    assert made["credential"] == "access_key" and made["settings"]["prefix"] == "iris"
    table = nimbus("datastore", "list")
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split()[:3] == ["NAME", "TYPE", "DEFAULT"]
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == ["workspaceblobstore", "lake"]
    shown = nimbus("datastore", "show", "lake")
    assert shown.exit_code == 0 and "access_key" in shown.stdout
    assert s3_compatible.secret_access_key not in table.stdout + shown.stdout + str(made)
    assert nimbus("datastore", "set-default", "lake", "-o", "json", json_output=True)["is_default"]
    refused = nimbus("datastore", "delete", "lake")
    assert refused.exit_code == 1 and "default" in refused.stderr
    nimbus("datastore", "set-default", "workspaceblobstore")
    assert nimbus("datastore", "delete", "lake", "-o", "json", json_output=True) == {"name": "lake", "deleted": True}
    missing = nimbus("datastore", "show", "lake")
    assert missing.exit_code == 1 and "lake" in missing.stderr


def test_the_secret_key_comes_from_standard_input(platform, s3_compatible):
    runner = CliRunner(mix_stderr=False)
    env = {"NIMBUS_URL": platform.url, "NIMBUS_TOKEN": platform.token}
    result = runner.invoke(cli, ["datastore", "register-s3", "lake", "--bucket", s3_compatible.bucket,
                                 "--endpoint-url", s3_compatible.url, "--access-key-id", s3_compatible.access_key_id],
                           input=s3_compatible.secret_access_key + "\n", env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert s3_compatible.secret_access_key not in result.stdout + result.stderr
    wrong = runner.invoke(cli, ["datastore", "update-credentials", "lake", "--access-key-id",
                                s3_compatible.access_key_id], input="not-the-secret-key\n", env=env)
    assert wrong.exit_code == 1 and "SignatureDoesNotMatch" in wrong.stderr


def test_a_key_file_without_an_id_is_a_usage_error(nimbus, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("x")
    result = nimbus("datastore", "register-s3", "lake", "--bucket", "data", "--secret-access-key-file",
                    str(secret_file))
    assert result.exit_code == 2 and "--access-key-id" in result.stderr


def test_files_go_up_are_listed_and_come_down(nimbus, platform, tmp_path):
    source = tmp_path / "data"
    (source / "images").mkdir(parents=True)
    (source / "train.csv").write_text("a,b\n1,2\n")
    (source / "images" / "cat.png").write_bytes(b"\x89PNG")
    sent = nimbus("datastore", "upload", "workspaceblobstore", str(source), "--target-path", "iris")
    assert sent.exit_code == 0 and "2 file(s) uploaded" in sent.stdout
    one = nimbus("datastore", "upload", "workspaceblobstore", str(source / "train.csv"), "-o", "json", json_output=True)
    assert one == [{"path": "train.csv", "size": 8}]
    listing = nimbus("datastore", "ls", "workspaceblobstore", "--prefix", "iris/")
    assert [line.split()[0] for line in listing.stdout.splitlines()] == ["PATH", "iris/images/cat.png", "iris/train.csv"]
    got = nimbus("datastore", "download", "workspaceblobstore", "--prefix", "iris", "-d", str(tmp_path / "copy"),
                 "-o", "json", json_output=True)
    assert got["files"] == 2 and (tmp_path / "copy" / "iris" / "train.csv").read_text() == "a,b\n1,2\n"
    again = nimbus("datastore", "download", "workspaceblobstore", "--prefix", "iris", "-d", str(tmp_path / "copy"))
    assert "0 file(s) written" in again.stdout
