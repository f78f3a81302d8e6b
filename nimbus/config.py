"""Where the service is and who we are.

The URL and token come as a pair from the first place that names a service: the NIMBUS_URL and
NIMBUS_TOKEN variables, then the profile `nimbus login` saves, then the credentials file `nimbus up`
writes. Arguments given in code override either half of the pair.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from nimbus.exceptions import ConfigurationError
from nimbus.home import nimbus_home

DEFAULT_WORKSPACE = "default"
_HINT = "run `nimbus up` to start the local platform, or `nimbus login --url URL --token TOKEN`"


@dataclass(frozen=True)
class ServiceConfig:
    url: str
    token: str
    workspace: str
    source: str  # where the URL and token came from, for messages


def profile_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("NIMBUS_CONFIG") or Path.home() / ".config" / "nimbus" / "profile.json").expanduser()


def credentials_path(env: Mapping[str, str] | None = None) -> Path:
    return nimbus_home(env) / "credentials"


def resolve(url: str | None = None, token: str | None = None, workspace: str | None = None,
            env: Mapping[str, str] | None = None) -> ServiceConfig:
    """The service to talk to; raises ConfigurationError when nothing names one."""
    env = os.environ if env is None else env
    profile = load_profile(env)
    found_url, found_token, source = url, token, "arguments"
    if not (url and token):
        for candidate, name in _sources(env, profile):
            if candidate.get("url") or candidate.get("token"):
                found_url, found_token, source = url or candidate.get("url"), token or candidate.get("token"), name
                break
    if not found_url or not found_token:
        missing = "URL" if not found_url else "token"
        where = "" if source == "arguments" else f" ({source} gives no {missing})"
        raise ConfigurationError(f"no Nimbus service {missing} is configured{where}: {_HINT}")
    chosen = workspace or env.get("NIMBUS_WORKSPACE") or (profile or {}).get("workspace") or DEFAULT_WORKSPACE
    return ServiceConfig(found_url.rstrip("/"), found_token, chosen, source)


def _sources(env: Mapping[str, str], profile: dict | None):
    yield {"url": env.get("NIMBUS_URL"), "token": env.get("NIMBUS_TOKEN")}, "NIMBUS_URL/NIMBUS_TOKEN"
    if profile:
        yield profile, f"profile {profile_path(env)}"
    credentials = _read_json(credentials_path(env))
    if credentials:
        yield credentials, f"local platform credentials {credentials_path(env)}"


def load_profile(env: Mapping[str, str] | None = None) -> dict | None:
    return _read_json(profile_path(env))


def save_profile(url: str, token: str, workspace: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Writes the profile readable by its owner only, replacing any previous one atomically."""
    path = profile_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"url": url.rstrip("/"), "token": token, "workspace": workspace or DEFAULT_WORKSPACE}
    fd, tmp = tempfile.mkstemp(prefix=".profile-", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_json(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigurationError(f"cannot read {path}: {err.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigurationError(f"{path} is not valid JSON; fix or delete it") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} must hold a JSON object; fix or delete it")
    return {k: v for k, v in data.items() if isinstance(v, str)}
