"""Environments on this machine: real virtualenvs, built once per hash under a file lock, offline."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest

from nimbus.runtime import environment_build as environments
from nimbus.runtime.environment_build import READY, EnvironmentBuildError, prepare
from nimbus.runtime.runner import prepare_for_run
from tests.wheels import TINY_GREETING, build_tiny_wheel

BARE = {"python": environments.running_python(), "pip": [], "variables": {"COLOR": "blue"}, "base_image": "x"}


def digest(char: str) -> str:
    return char * 64


def run_in(handle, code: str) -> str:
    return subprocess.run([handle.python, "-c", code], capture_output=True, text=True, check=True,
                          env={**handle.env, "PYTHONNOUSERSITE": "1"}).stdout.strip()


def test_a_bare_environment_is_a_venv_that_sees_nimbus_and_is_reused_at_once(tmp_path):
    handle = prepare(BARE, digest("a"), tmp_path)
    target = tmp_path / digest("a")
    assert handle.python == str(target / "bin" / "python") and (target / READY).is_file()
    assert handle.env["COLOR"] == "blue" and handle.env["VIRTUAL_ENV"] == str(target)
    assert handle.env["PATH"].startswith(str(target / "bin"))
    # the script's interpreter is the venv's, and Run.get_context() can be imported in it
    assert run_in(handle, "import sys, nimbus.experiment; print(sys.prefix)") == str(target)

    ready = (target / READY).stat().st_mtime_ns
    started = time.perf_counter()
    assert prepare(BARE, digest("a"), tmp_path) == handle
    assert time.perf_counter() - started < 0.05
    assert (target / READY).stat().st_mtime_ns == ready


def test_requirements_install_into_the_venv_from_a_local_wheel(tmp_path):
    wheels = build_tiny_wheel(tmp_path / "wheels").parent
    definition = {**BARE, "pip": ["--no-index", f"--find-links {wheels}", "nimbus-tiny==0.1"]}
    handle = prepare(definition, digest("b"), tmp_path / "envs")
    where = run_in(handle, "import nimbus_tiny; print(nimbus_tiny.GREETING, nimbus_tiny.__file__)")
    assert where.startswith(TINY_GREETING) and str(tmp_path / "envs" / digest("b")) in where
    # the runner's own interpreter does not have it: it went into the environment only
    with pytest.raises(ImportError):
        __import__("nimbus_tiny")


def test_concurrent_prepares_build_once(tmp_path, monkeypatch):
    builds, real_build = [], environments._build

    def counted(*args):
        builds.append(args[1])
        time.sleep(0.3)  # the second caller arrives while the first holds the lock
        real_build(*args)

    monkeypatch.setattr(environments, "_build", counted)
    handles, errors = [], []

    def work():
        try:
            handles.append(prepare(BARE, digest("c"), tmp_path))
        except BaseException as err:  # noqa: BLE001 - checked below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and builds == [digest("c")] and handles[0] == handles[1]


def test_a_failed_build_keeps_its_log_removes_the_venv_and_raises_with_the_tail(tmp_path):
    definition = {**BARE, "pip": ["--no-index", f"--find-links {tmp_path / 'empty'}", "nimbus-absent==9.9"]}
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnvironmentBuildError) as failure:
        prepare(definition, digest("d"), tmp_path / "envs")
    log = tmp_path / "envs" / f"{digest('d')}.build.log"
    assert "nimbus-absent" in str(failure.value) and str(log) in str(failure.value)
    assert not (tmp_path / "envs" / digest("d")).exists()
    assert "No matching distribution" in log.read_text() and "build failed" in log.read_text()


def test_a_half_built_venv_is_built_again(tmp_path):
    leftover = tmp_path / digest("e")
    (leftover / "bin").mkdir(parents=True)
    (leftover / "bin" / "junk").write_text("from a build that was killed")
    handle = prepare(BARE, digest("e"), tmp_path)
    assert not (leftover / "bin" / "junk").exists() and (leftover / READY).is_file()
    assert run_in(handle, "print('ok')") == "ok"


def test_another_python_must_be_on_path_and_hashes_must_be_digests(tmp_path):
    with pytest.raises(EnvironmentBuildError, match="Python 3.99.*no python3.99 on PATH"):
        prepare({**BARE, "python": "3.99"}, digest("f"), tmp_path)
    assert not (tmp_path / digest("f")).exists() and (tmp_path / f"{digest('f')}.build.log").exists()
    with pytest.raises(EnvironmentBuildError, match="not a sha256"):
        prepare(BARE, "../escape", tmp_path)


class FakeClient:
    def __init__(self, version: dict):
        self.version, self.paths = version, []

    def get(self, path: str):
        self.paths.append(path)
        return self.version


def test_a_run_fetches_its_version_and_inside_its_image_builds_nothing(tmp_path, monkeypatch):
    client = FakeClient({"definition": BARE, "hash": digest("9")})
    monkeypatch.setenv("NIMBUS_ENVIRONMENT_HASH", digest("9"))
    handle = prepare_for_run(client, "team", "sklearn", home=tmp_path)
    assert client.paths == ["/v1/workspaces/team/environments/sklearn/versions/latest"]
    assert handle.env == {"COLOR": "blue"} and not list(tmp_path.iterdir())

    monkeypatch.setenv("NIMBUS_ENVS_DIR", str(tmp_path / "here"))
    monkeypatch.delenv("NIMBUS_ENVIRONMENT_HASH")
    handle = prepare_for_run(client, "team", "sklearn:3")
    assert client.paths[-1].endswith("/sklearn/versions/3") and handle.python.startswith(str(tmp_path / "here"))
