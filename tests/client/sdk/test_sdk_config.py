"""Finding the service: arguments, then environment, then the saved profile, then the local platform."""
from __future__ import annotations

import json
import stat

import pytest

from nimbus import ConfigurationError
from nimbus.config import credentials_path, load_profile, resolve, save_profile


@pytest.fixture
def credentials(tmp_path, monkeypatch):
    home = tmp_path / "platform-home"
    monkeypatch.setenv("NIMBUS_HOME", str(home))
    home.mkdir()
    (home / "credentials").write_text(json.dumps({"url": "http://127.0.0.1:8000", "token": "nmb_local",
                                                  "user": "admin"}))
    return home / "credentials"


def test_nothing_configured_says_what_to_do():
    with pytest.raises(ConfigurationError, match="nimbus up.*nimbus login"):
        resolve()


def test_local_platform_credentials_are_the_last_resort(credentials):
    config = resolve()
    assert (config.url, config.token, config.workspace) == ("http://127.0.0.1:8000", "nmb_local", "default")
    assert str(credentials) in config.source


def test_the_profile_beats_the_credentials(credentials):
    save_profile("https://api.example.com/dev/", "nmb_profile", "team")
    config = resolve()
    assert (config.url, config.token, config.workspace) == ("https://api.example.com/dev", "nmb_profile", "team")


def test_the_environment_beats_the_profile(credentials, monkeypatch):
    save_profile("https://api.example.com", "nmb_profile", "team")
    monkeypatch.setenv("NIMBUS_URL", "http://env:1")
    monkeypatch.setenv("NIMBUS_TOKEN", "nmb_env")
    config = resolve()
    assert (config.url, config.token, config.workspace) == ("http://env:1", "nmb_env", "team")
    monkeypatch.setenv("NIMBUS_WORKSPACE", "from-env")
    assert resolve().workspace == "from-env"
    assert resolve(workspace="explicit").workspace == "explicit"


def test_arguments_beat_everything(credentials, monkeypatch):
    monkeypatch.setenv("NIMBUS_URL", "http://env:1")
    monkeypatch.setenv("NIMBUS_TOKEN", "nmb_env")
    config = resolve("http://arg:2", "nmb_arg", "ws")
    assert (config.url, config.token, config.workspace, config.source) == ("http://arg:2", "nmb_arg", "ws", "arguments")
    assert resolve(token="nmb_arg").url == "http://env:1"


def test_an_environment_url_without_a_token_is_an_error(monkeypatch, credentials):
    monkeypatch.setenv("NIMBUS_URL", "http://env:1")
    with pytest.raises(ConfigurationError, match="NIMBUS_URL/NIMBUS_TOKEN gives no token"):
        resolve()


def test_the_profile_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("NIMBUS_CONFIG", str(tmp_path / "deep" / "profile.json"))
    path = save_profile("http://h", "nmb_t")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_profile() == {"url": "http://h", "token": "nmb_t", "workspace": "default"}


def test_a_broken_file_is_reported(tmp_path, monkeypatch):
    profile = tmp_path / "profile.json"
    profile.write_text("{not json")
    monkeypatch.setenv("NIMBUS_CONFIG", str(profile))
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        resolve()


def test_default_locations(monkeypatch, tmp_path):
    monkeypatch.delenv("NIMBUS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials_path() == tmp_path / ".nimbus" / "credentials"
