"""The Secrets contract, run against both backends: Secrets Manager (moto) and encrypted local files."""
from __future__ import annotations

import logging
import os
import stat

import pytest

from chalicelib.errors import Invalid, NotFound
from chalicelib.store.factory import build_secrets
from chalicelib.store.local_secrets import LocalSecrets

VALUE = "s3cr3t-value-ü-" + "x" * 40


@pytest.fixture
def secrets(settings):
    return build_secrets(settings)


def test_put_get_replace(secrets):
    secrets.put("endpoint-keys/ws/iris", VALUE)
    assert secrets.get("endpoint-keys/ws/iris") == VALUE
    secrets.put("endpoint-keys/ws/iris", "second")
    assert secrets.get("endpoint-keys/ws/iris") == "second"


def test_names_are_independent(secrets):
    secrets.put("a/b", "1")
    secrets.put("a.b", "2")
    secrets.put("A/B", "3")
    assert [secrets.get(n) for n in ("a/b", "a.b", "A/B")] == ["1", "2", "3"]


def test_missing_secret_is_not_found(secrets):
    with pytest.raises(NotFound):
        secrets.get("datastores/ws/nothing")


def test_delete_is_idempotent(secrets):
    secrets.put("datastores/ws/blob", VALUE)
    secrets.delete("datastores/ws/blob")
    secrets.delete("datastores/ws/blob")
    secrets.delete("never-existed")
    with pytest.raises(NotFound):
        secrets.get("datastores/ws/blob")


def test_invalid_names_are_refused(secrets):
    for name in ["", "a b", "x:y", "a+b", "é", "a" * 257, "a\nb"]:
        for call in (lambda: secrets.put(name, "v"), lambda: secrets.get(name), lambda: secrets.delete(name)):
            with pytest.raises(Invalid) as caught:
                call()
            assert caught.value.field == "name", name


def test_dots_and_slashes_are_plain_characters(secrets):
    secrets.put("../x", "dots")
    assert secrets.get("../x") == "dots"


def test_longest_name_and_large_values_but_no_empty_ones(secrets):
    secrets.put("n" * 256, "v")
    assert secrets.get("n" * 256) == "v"
    with pytest.raises(Invalid):
        secrets.put("empty", "")
    big = "v" * 65536
    secrets.put("big", big)
    assert secrets.get("big") == big
    with pytest.raises(Invalid):
        secrets.put("too-big", big + "v")


def test_values_never_reach_the_logs(secrets, caplog):
    caplog.set_level(logging.DEBUG)
    secrets.put("quiet", VALUE)
    secrets.get("quiet")
    with pytest.raises(Invalid) as caught:
        secrets.put("quiet", VALUE * 2000)
    assert VALUE not in caplog.text and VALUE not in str(caught.value)


# --- backend specifics ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["aws"])
def test_aws_names_carry_the_prefix(settings, secrets):
    import boto3

    secrets.put("endpoint-keys/ws/iris", VALUE)
    client = boto3.client("secretsmanager", region_name=settings.region)
    full = f"nimbus/{settings.table_name}/endpoint-keys/ws/iris"
    assert client.get_secret_value(SecretId=full)["SecretString"] == VALUE
    secrets.delete("endpoint-keys/ws/iris")
    assert client.list_secrets()["SecretList"] == []  # deleted without a recovery window


@pytest.mark.parametrize("backend", ["local"])
def test_local_files_are_private_and_encrypted(settings, secrets):
    secrets.put("datastores/ws/blob", VALUE)
    key_file = settings.home / "secret.key"
    (secret_file,) = (settings.home / "secrets").iterdir()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.name.endswith(".secret") and "datastores" not in secret_file.name
    assert VALUE.encode() not in secret_file.read_bytes()
    assert [p.name for p in settings.home.iterdir() if p.name.startswith(".tmp-")] == []
    assert [p.name for p in (settings.home / "secrets").iterdir()] == [secret_file.name]


@pytest.mark.parametrize("backend", ["local"])
def test_local_key_is_created_once_and_shared(settings):
    first, second = LocalSecrets(settings.home), LocalSecrets(settings.home)
    first.put("shared", VALUE)
    key = (settings.home / "secret.key").read_bytes()
    assert second.get("shared") == VALUE
    second.put("other", "x")
    assert (settings.home / "secret.key").read_bytes() == key


@pytest.mark.parametrize("backend", ["local"])
def test_local_refuses_a_file_moved_under_another_name(settings, secrets):
    secrets.put("one", "1")
    secrets.put("two", "2")
    one, two = secrets._path("one"), secrets._path("two")
    os.replace(one, two)
    with pytest.raises(Exception, match="holds another secret"):
        secrets.get("two")
