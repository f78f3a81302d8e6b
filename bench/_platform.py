"""What every benchmark shares: servers in subprocesses, a few statistics, and the JSON result line.

Only the standard library is used here: the MLflow baseline imports this module from its own
virtual environment too.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
NIMBUS_PYTHON = REPO / ".venv" / "bin" / "python"


# --- statistics -----------------------------------------------------------------------------------
def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between the nearest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def p50(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


def timed_ms(call: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    """Wall time of `repeat` calls in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def rounded(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}") if value and math.isfinite(value) else value


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


# --- output ---------------------------------------------------------------------------------------
def log(message: str) -> None:
    """Progress goes to stderr so the result stays the last line of stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """Print the result as one JSON object: the last line a benchmark writes to stdout."""
    sys.stdout.flush()
    print(json.dumps(result, separators=(", ", ": "), allow_nan=False), flush=True)


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise ValueError("no JSON object on any line of the output")


# --- processes ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, headers: dict | None = None, timeout: float = 2.0) -> int | None:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process group we created for this server (its workers too), SIGKILL after `grace`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace)
    # Workers that outlived their parent are still in the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def server(command: list[str], *, ready: Callable[[], bool], log_path: Path, cwd: Path | None = None,
           env: dict | None = None, timeout: float = 120.0, name: str = "server") -> Iterator[subprocess.Popen]:
    """Start `command` in its own process group, wait until `ready()` holds, yield it, stop it."""
    with open(log_path, "wb") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {timeout:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def nimbus_platform(keep: bool = False) -> Iterator[tuple[str, str]]:
    """The local platform on a fresh NIMBUS_HOME and a port the system picks; yields (url, token)."""
    with platform_with_home(keep) as (url, token, _):
        yield url, token


@contextlib.contextmanager
def platform_with_home(keep: bool = False) -> Iterator[tuple[str, str, Path]]:
    """nimbus_platform, also yielding its NIMBUS_HOME.

    `python -m chalicelib.local --port 0` binds before it writes $NIMBUS_HOME/credentials, so the URL
    in that file names the real port and nothing else can take it in between.
    """
    home = Path(tempfile.mkdtemp(prefix="nimbus-bench-"))
    credentials = home / "credentials"
    env = {**os.environ, "NIMBUS_HOME": str(home)}
    env.pop("NIMBUS_ENVS_DIR", None)  # environments are built under this platform's home
    python = str(NIMBUS_PYTHON if NIMBUS_PYTHON.exists() else sys.executable)
    found: dict = {}

    def ready() -> bool:
        if not found:
            try:
                data = json.loads(credentials.read_text())
            except (OSError, ValueError):
                return False
            if not data.get("url") or not data.get("token"):
                return False
            found.update(data)
        status = http_status(f"{found['url']}/v1/whoami", {"Authorization": f"Bearer {found['token']}"})
        return status == 200

    try:
        with server([python, "-m", "chalicelib.local", "--home", str(home), "--port", "0"], ready=ready,
                    log_path=home / "server.log", cwd=REPO, env=env, timeout=60, name="the Nimbus platform"):
            yield found["url"], found["token"], home
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)

