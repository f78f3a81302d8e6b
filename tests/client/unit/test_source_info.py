"""Provenance of submitted code: git checkouts and CI providers."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from nimbus import source_info
from nimbus.source_info import ci_info, git_info

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(path, *args):
    subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(path), "PATH": "/usr/bin:/bin",
                        "GIT_CONFIG_NOSYSTEM": "1"})


@needs_git
def test_git_info_of_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no user configuration leaks in
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "remote", "add", "origin", "https://user:s3cret@git.example.com/team/repo.git")
    (tmp_path / "train.py").write_text("print(1)\n")
    git(tmp_path, "add", "train.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    info = git_info(tmp_path)
    assert info["branch"] == "main" and len(info["commit"]) == 40 and info["dirty"] is False
    assert info["remote"] == "https://git.example.com/team/repo.git"  # the password never leaves

    (tmp_path / "train.py").write_text("print(2)\n")
    assert git_info(tmp_path)["dirty"] is True


@needs_git
def test_git_info_before_the_first_commit_and_detached(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    git(tmp_path, "init", "-q", "-b", "main")
    assert git_info(tmp_path) == {"remote": None, "branch": "main", "commit": None, "dirty": False}
    (tmp_path / "a").write_text("a")
    git(tmp_path, "add", "a")
    git(tmp_path, "commit", "-q", "-m", "a")
    git(tmp_path, "checkout", "-q", "--detach")
    info = git_info(tmp_path / ".")
    assert info["branch"] is None and info["commit"] and info["dirty"] is False


@needs_git
def test_git_info_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # do not find a checkout above
    assert git_info(tmp_path) is None


def test_git_info_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_info(tmp_path) is None


def test_git_info_when_git_hangs(tmp_path, monkeypatch):
    def slow(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 10)

    monkeypatch.setattr(source_info.subprocess, "run", slow)
    assert git_info(tmp_path) is None


@pytest.mark.parametrize("url, clean", [
    ("https://x-access-token:ghs_abc@github.com/o/r.git", "https://github.com/o/r.git"),
    ("ssh://git@host:22/o/r.git", "ssh://host:22/o/r.git"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ("https://github.com/o/r", "https://github.com/o/r"),
    ("", None),
])
def test_remote_urls_lose_credentials(url, clean):
    assert source_info._clean_url(url) == clean


def test_ci_info_github_actions():
    env = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "123", "GITHUB_SERVER_URL": "https://github.example.com",
           "GITHUB_REPOSITORY": "team/repo", "GITHUB_REF": "refs/heads/main", "GITHUB_SHA": "abc",
           "GITHUB_ACTOR": "ada", "CI": "true"}
    assert ci_info(env) == {"provider": "github", "run_id": "123",
                            "run_url": "https://github.example.com/team/repo/actions/runs/123",
                            "ref": "refs/heads/main", "sha": "abc", "actor": "ada", "repository": "team/repo"}


def test_ci_info_github_defaults_to_github_com():
    env = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "7", "GITHUB_REPOSITORY": "o/r"}
    assert ci_info(env)["run_url"] == "https://github.com/o/r/actions/runs/7"


def test_ci_info_gitlab():
    env = {"GITLAB_CI": "true", "CI": "true", "CI_PIPELINE_ID": "9", "CI_JOB_URL": "https://gl/job/1",
           "CI_COMMIT_REF_NAME": "feature", "CI_COMMIT_SHA": "def", "GITLAB_USER_LOGIN": "grace",
           "CI_PROJECT_PATH": "group/project"}
    assert ci_info(env) == {"provider": "gitlab", "run_id": "9", "run_url": "https://gl/job/1", "ref": "feature",
                            "sha": "def", "actor": "grace", "repository": "group/project"}
    assert ci_info({**env, "CI_PIPELINE_URL": "https://gl/pipelines/9"})["run_url"] == "https://gl/pipelines/9"


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_ci_info_generic(value):
    assert ci_info({"CI": value}) == {"provider": "generic"}


@pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"GITHUB_ACTIONS": "false"}])
def test_ci_info_outside_ci(env):
    assert ci_info(env) is None


def test_ci_info_reads_the_environment_of_the_moment(monkeypatch):
    # Some libraries (Chalice's test client among them) rebind os.environ for a while; a default bound
    # at import time would keep reading the old mapping.
    monkeypatch.setattr(source_info.os, "environ", {"GITLAB_CI": "true", "CI_PIPELINE_ID": "7"})
    assert ci_info() == {"provider": "gitlab", "run_id": "7"}
