"""Environments on this machine: one virtualenv per definition hash, built once and shared by every run.

    $NIMBUS_ENVS_DIR/                 (default $NIMBUS_HOME/envs)
        <hash>/                       the virtualenv; `nimbus-ready.json` in it, written last, marks it complete
        <hash>.lock                   flock'ed while it is built: concurrent runs wait, then reuse it
        <hash>.build.log              what `python -m venv` and `pip install` printed, kept after a failure

How the script still finds `nimbus` (for Run.get_context()) and what the environment adds:

- When the environment asks for the runner's own Python (major.minor), the venv is created from the
  runner's interpreter and a `.pth` file in it adds the runner's site-packages *after* the venv's own
  (`site.addsitedir`, so editable installs there work too). That is `--system-site-packages` for the
  interpreter the runner actually runs — which `--system-site-packages` itself is not when the runner
  lives in a venv (it would expose the base interpreter's packages, without nimbus). The requirements
  install into the venv and win over the runner's packages; pip itself comes from the runner, so no
  copy of pip is installed and nothing is downloaded for an environment without requirements.
- Any other version needs `python<major.minor>` on PATH. Compiled packages of the runner cannot serve
  another version, so that venv gets its own pip, a `.pth` naming only the folder that holds `nimbus`,
  and nimbus's runtime dependencies (CLIENT_REQUIREMENTS) installed beside the requirements.

Standard library only (the API is reached through the client passed in).
"""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import nimbus
from nimbus.home import nimbus_home

READY = "nimbus-ready.json"
PTH = "nimbus-runner.pth"
LOG_TAIL_CHARS = 3000
# What the runner and Run.get_context() import (the CLI's click is not needed inside a run).
CLIENT_REQUIREMENTS = ("requests>=2.31", "urllib3>=2,<3", "pathspec>=0.12", "PyYAML>=6", "psutil>=5.9")
_HASH = re.compile(r"[0-9a-f]{64}")
_PYTHON = re.compile(r"\d+\.\d+")


class EnvironmentBuildError(Exception):
    """The environment could not be built; the message ends with the build log's tail."""


@dataclass(frozen=True)
class EnvironmentHandle:
    """The interpreter the script runs with, and the variables added to its environment."""

    python: str
    env: dict[str, str] = field(default_factory=dict)


def envs_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("NIMBUS_ENVS_DIR"):
        return Path(environ["NIMBUS_ENVS_DIR"]).expanduser()
    return nimbus_home(environ) / "envs"


def prepare(definition: Mapping[str, Any], hash: str, home: str | os.PathLike) -> EnvironmentHandle:
    """The venv of `definition` under home/<hash>, built first unless complete; raises EnvironmentBuildError."""
    if not isinstance(hash, str) or not _HASH.fullmatch(hash):
        raise EnvironmentBuildError(f"environment hash {hash!r} is not a sha256 digest")
    home = Path(home)
    target = home / hash
    if not (target / READY).is_file():  # the common case, a reused venv, takes no lock
        home.mkdir(parents=True, exist_ok=True)
        with open(home / f"{hash}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
            if not (target / READY).is_file():
                _build(definition, hash, target, home / f"{hash}.build.log")
    return handle(definition, target)


def handle(definition: Mapping[str, Any], target: Path) -> EnvironmentHandle:
    variables = {str(k): str(v) for k, v in (definition.get("variables") or {}).items()}
    # Last, so a variable of the definition cannot unseat the venv: `python` and `pip` in a command are its own.
    variables.update(VIRTUAL_ENV=str(target), PATH=f"{target / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return EnvironmentHandle(str(target / "bin" / "python"), variables)


def base_interpreter(python: str) -> str:
    """The runner's own interpreter for its own major.minor, else `python<ver>` from PATH."""
    if not isinstance(python, str) or not _PYTHON.fullmatch(python):
        raise EnvironmentBuildError(f"python {python!r} is not a major.minor version")
    if python == running_python():
        return sys.executable
    found = shutil.which(f"python{python}")
    if found is None:
        raise EnvironmentBuildError(f"the environment asks for Python {python}, but this machine runs "
                                    f"{running_python()} and has no python{python} on PATH")
    return found


def running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


# --- building ---------------------------------------------------------------------------------------
def _build(definition: Mapping[str, Any], hash: str, target: Path, log_path: Path) -> None:
    if target.exists():  # a build killed half-way left it: start again
        shutil.rmtree(target)
    started = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            python = base_interpreter(definition.get("python") or running_python())
            own = python == sys.executable
            log.write(f"building environment {hash} with {python}\n")
            log.flush()
            # pip comes from the runner's site-packages when it has one (see the module's docstring)
            borrow_pip = own and importlib.util.find_spec("pip") is not None
            _run([python, "-m", "venv", *(["--without-pip"] if borrow_pip else []), str(target)], log)
            venv_python = target / "bin" / "python"
            purelib = Path(_output([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]))
            (purelib / PTH).write_text(_pth_lines(own), encoding="utf-8")
            requirements = list(definition.get("pip") or [])
            if not own:
                requirements += CLIENT_REQUIREMENTS
            if requirements:
                (target / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
                _run([str(venv_python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                      "-r", str(target / "requirements.txt")], log)
            _write_ready(target, hash, definition, time.time() - started)
            log.write(f"built in {time.time() - started:.1f} s\n")
        except (OSError, subprocess.SubprocessError, EnvironmentBuildError) as err:
            log.write(f"\nbuild failed: {err}\n")
            log.flush()
            shutil.rmtree(target, ignore_errors=True)
            raise EnvironmentBuildError(f"building environment {hash[:12]} failed ({err}); the end of "
                                        f"{log_path}:\n{_tail(log_path)}") from None


def _pth_lines(own: bool) -> str:
    """Lines of the venv's .pth (see the module's docstring): appended to sys.path after the venv's own."""
    nimbus_root = str(Path(nimbus.__file__).resolve().parent.parent)
    lines = []
    if own:
        for directory in dict.fromkeys([*_site_dirs(), sysconfig.get_paths()["purelib"]]):
            lines.append(f"import site; site.addsitedir({directory!r})")
    lines.append(nimbus_root)
    return "\n".join(lines) + "\n"


def _site_dirs() -> list[str]:
    return [d for d in site.getsitepackages() if os.path.isdir(d)]


def _run(argv: list[str], log) -> None:
    log.write("$ " + " ".join(argv) + "\n")
    log.flush()
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # the venv's own paths, not whatever the runner was started with
    env.pop("VIRTUAL_ENV", None)
    code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env).returncode
    if code != 0:
        raise EnvironmentBuildError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} exited with code {code}")


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout.strip()


def _write_ready(target: Path, hash: str, definition: Mapping[str, Any], seconds: float) -> None:
    """Written last, atomically: a venv without it is half-built and is built again."""
    partial = target / (READY + ".tmp")
    partial.write_text(json.dumps({"hash": hash, "definition": dict(definition), "build_seconds": round(seconds, 3)},
                                  sort_keys=True), encoding="utf-8")
    os.replace(partial, target / READY)


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-LOG_TAIL_CHARS:]
