"""Where submitted code came from: the git checkout it sits in and the CI job that submitted it.

Both are best effort: a missing git, a folder outside any repository or a slow repository gives
less information, never an error, since a run must not fail for want of provenance.
"""
from __future__ import annotations

import os
import subprocess
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

GIT_TIMEOUT_SECONDS = 10.0
TRUE_VALUES = ("true", "1", "yes")


def git_info(path: str | os.PathLike = ".") -> dict | None:
    """{"remote", "branch", "commit", "dirty"} of the repository holding `path`, or None outside one.

    branch is None when HEAD is detached, commit None before the first commit, dirty None when
    git could not tell in time. Credentials in the remote's URL are removed.
    """
    if _git(path, "rev-parse", "--is-inside-work-tree") != "true":
        return None
    status = _git(path, "status", "--porcelain")  # untracked files count: they go into the snapshot too
    return {
        "remote": _clean_url(_remote(path)),
        "branch": _git(path, "symbolic-ref", "--quiet", "--short", "HEAD"),
        "commit": _git(path, "rev-parse", "--verify", "--quiet", "HEAD"),
        "dirty": None if status is None else status != "",
    }


def _remote(path: str | os.PathLike) -> str | None:
    """origin's URL, else the first remote's."""
    url = _git(path, "config", "--get", "remote.origin.url")
    if url:
        return url
    names = (_git(path, "remote") or "").split()
    return _git(path, "config", "--get", f"remote.{names[0]}.url") if names else None


def _git(path: str | os.PathLike, *args: str) -> str | None:
    """git's trimmed output, or None when git is missing, fails or takes too long."""
    # No prompts for credentials, and no index lock taken: another git command may be running.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(["git", "-C", os.fspath(path), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_SECONDS, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _clean_url(url: str | None) -> str | None:
    """The URL without user name or password: a token in a remote must not end up on a run."""
    if not url or "://" not in url:
        return url or None  # scp-like git@host:path has no secret in it
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def ci_info(environ: Mapping[str, str] | None = None) -> dict | None:
    """The CI job running this process: {"provider": "github"|"gitlab"|"generic", ...}, or None.

    Besides provider, only what the CI exposes: run_id, run_url, ref, sha, actor, repository.
    """
    environ = os.environ if environ is None else environ  # read at call time: os.environ may be rebound
    if environ.get("GITHUB_ACTIONS", "").lower() == "true":
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repository, run_id = environ.get("GITHUB_REPOSITORY"), environ.get("GITHUB_RUN_ID")
        info = {"provider": "github", "run_id": run_id,
                "run_url": f"{server}/{repository}/actions/runs/{run_id}" if repository and run_id else None,
                "ref": environ.get("GITHUB_REF"), "sha": environ.get("GITHUB_SHA"),
                "actor": environ.get("GITHUB_ACTOR"), "repository": repository}
    elif environ.get("GITLAB_CI", "").lower() == "true":
        info = {"provider": "gitlab", "run_id": environ.get("CI_PIPELINE_ID"),
                "run_url": environ.get("CI_PIPELINE_URL") or environ.get("CI_JOB_URL"),
                "ref": environ.get("CI_COMMIT_REF_NAME"), "sha": environ.get("CI_COMMIT_SHA"),
                "actor": environ.get("GITLAB_USER_LOGIN"), "repository": environ.get("CI_PROJECT_PATH")}
    elif environ.get("CI", "").lower() in TRUE_VALUES:
        info = {"provider": "generic"}
    else:
        return None
    return {key: value for key, value in info.items() if value}
