"""Local scoring hosts: one process per deployment (`python -m chalicelib.scoring.host`), supervised.

A deployment's folder under `$NIMBUS_HOME/scoring/<ws>/<endpoint>/<deployment>/r<revision>/` holds its
source, its models and `host.json`; the host writes `ready.json` (its port) or `failed.json`. An update
starts the new revision next to the old one and stops the old one only once the new one answers, so
requests never find the deployment down. A host that dies is restarted; one that keeps dying is marked
Failed. Live hosts are recorded (`HOSTS#local` items) and started again by the next `nimbus up`.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from chalicelib.hosting.host_spawner import INTERPRETER_FILE, ForkedHost, HostSpawner
from chalicelib.hosting.port import (
    FAILED, SUCCEEDED, DeploymentEnvironment, DeploymentSpec, EndpointTarget, FunctionHost, HostState, ScoreResult,
)
from chalicelib.store.local_blobs import LocalBlobs
from chalicelib.store.table import Query, Table
from nimbus.runtime import environment_build
from nimbus.runtime.private_files import write_private

HOSTS_PK = "HOSTS#local"
CRASH_LIMIT = 5  # crashes within CRASH_WINDOW_S before a deployment is declared Failed
CRASH_WINDOW_S = 120.0
RECYCLE_EXIT = 4  # the host exits with this after a run() timeout: restart it, it did not crash
INIT_FAILED_EXIT = 3

StateReport = Callable[[str, str, str, int, str, "str | None"], None]  # ws, endpoint, deployment, revision, state, error


@dataclass
class _Host:
    workspace: str
    endpoint: str
    deployment: str
    revision: int
    folder: Path
    process: "subprocess.Popen | ForkedHost | None" = None
    port: int | None = None
    crashes: deque = field(default_factory=deque)
    failed: bool = False
    stopping: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return self.workspace, self.endpoint, self.deployment


class LocalHosts(FunctionHost):
    def __init__(self, home: Path, blobs: LocalBlobs, table: Table, on_state: StateReport | None = None,
                 start_timeout_s: float = 120.0):
        self.root = Path(home) / "scoring"
        self.home = Path(home)
        self.blobs = blobs
        self.table = table
        self.on_state = on_state
        self.start_timeout_s = start_timeout_s
        # The API forwards requests it already authenticated with a key of its own, unknown to clients.
        self.proxy_key = "nmbp_" + os.urandom(24).hex()
        self.hosts: dict[tuple[str, str, str], _Host] = {}
        self.lock = threading.RLock()
        self.connections = threading.local()
        self.stopped = threading.Event()
        self.monitor: threading.Thread | None = None
        env = {**os.environ, "NIMBUS_BACKEND": "local", "NIMBUS_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        env.pop("NIMBUS_TOKEN", None)  # entry scripts get no user credentials
        self.spawner = HostSpawner(env, self.root, prefork=os.environ.get("NIMBUS_SCORING_PREFORK", "1") != "0")

    # --- FunctionHost --------------------------------------------------------------------------
    def deploy(self, spec: DeploymentSpec, previous: dict | None) -> HostState:
        """Settled at once: the host process started and answering (Succeeded), or Failed. The platform's own
        server has no request time limit, so building an environment and starting the host happen here."""
        folder = self._folder(spec.workspace, spec.endpoint, spec.deployment) / f"r{spec.revision}"
        shutil.rmtree(folder, ignore_errors=True)  # a half-written attempt at this revision
        self._write_folder(folder, spec)
        if spec.environment is not None:
            error = self._prepare_environment(folder, spec.environment)
            if error is not None:
                return HostState(FAILED, error, {**(previous or {}), "folder": str(folder)})
        host = _Host(spec.workspace, spec.endpoint, spec.deployment, spec.revision, folder)
        error = self._start(host)
        old = self.hosts.get(host.key)
        if error is not None:
            still = f"; revision {old.revision} keeps serving" if old and old.process and not old.failed else ""
            # The logs of the failed attempt are what its owner wants to read next.
            return HostState(FAILED, error + still, {**(previous or {}), "folder": str(folder)})
        with self.lock:
            self.hosts[host.key] = host
        self.table.put({"pk": HOSTS_PK, "sk": "#".join(host.key), "entity": "local_host", "folder": str(folder),
                        "revision": spec.revision})
        if old is not None:
            self._stop(old)
            shutil.rmtree(old.folder, ignore_errors=True)
        return HostState(SUCCEEDED, None, self._details(host))

    def advance(self, rollout: dict) -> HostState:
        """Never called for a rollout of this host (`deploy` settles it); here for the port's sake."""
        return HostState(FAILED, "the local scoring host's start was interrupted; deploy again")

    def set_traffic(self, workspace: str, endpoint: str, traffic: dict[str, int], details: dict[str, dict]) -> None:
        """Nothing to move: each request is routed from the endpoint's weights as they are at that moment."""

    def invoke(self, target: EndpointTarget, body: bytes, content_type: str) -> ScoreResult:
        choices = [(name, weight) for name, weight in target.traffic.items()
                   if weight > 0 and self._serving(self.hosts.get((target.workspace, target.endpoint, name)))]
        if not choices:
            return _unavailable(f"endpoint {target.endpoint!r} has no running scoring host (starting or failed)")
        name = random.choices([n for n, _ in choices], weights=[w for _, w in choices])[0]
        host = self.hosts[(target.workspace, target.endpoint, name)]
        for attempt in range(2):  # a host recycled since the last call: reconnect once
            connection = self._connection(host.port)
            try:
                connection.request("POST", "/score", body, {"Content-Type": content_type or "application/json",
                                                             "Authorization": f"Bearer {self.proxy_key}"})
                response = connection.getresponse()
                return ScoreResult(response.status, response.read(), name,
                                   response.getheader("Content-Type", "application/json"))
            except (OSError, http.client.HTTPException):
                self._drop_connection(host.port)
                if attempt:
                    return _unavailable(f"deployment {name!r} did not answer (restarting?)", name)
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def remove(self, workspace: str, endpoint: str, deployment: str, details: dict) -> None:
        with self.lock:
            host = self.hosts.pop((workspace, endpoint, deployment), None)
        if host is not None:
            self._stop(host)
        self.table.delete(HOSTS_PK, f"{workspace}#{endpoint}#{deployment}")
        shutil.rmtree(self._folder(workspace, endpoint, deployment), ignore_errors=True)

    def remove_endpoint(self, workspace: str, endpoint: str) -> None:
        for key in [k for k in self.hosts if k[:2] == (workspace, endpoint)]:
            self.remove(*key, {})
        shutil.rmtree(self.root / workspace / endpoint, ignore_errors=True)

    def logs(self, workspace: str, endpoint: str, deployment: str, details: dict, tail: int) -> str:
        host = self.hosts.get((workspace, endpoint, deployment))
        folder = details.get("folder") or (str(host.folder) if host else "")
        return _tail(Path(folder) / "host.log", tail) if folder else ""

    def endpoint_keys_changed(self, workspace: str, endpoint: str, key_digests: list[str]) -> None:
        self._write_keys(self.root / workspace / endpoint / "keys.json", key_digests)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """End the hosts an earlier platform left running, restart the ones it recorded (in the background),
        then supervise."""
        _end_orphans(self.root)  # before this platform starts any host: every one found is an orphan
        self.monitor = threading.Thread(target=self._supervise, name="scoring-hosts", daemon=True)
        self.monitor.start()
        threading.Thread(target=self._restore, name="scoring-hosts-restore", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            hosts = list(self.hosts.values())
        for host in hosts:
            self._stop(host)
        self.spawner.close()

    def _restore(self) -> None:
        for item in list(self.table.query_all(Query(HOSTS_PK))):
            workspace, endpoint, deployment = item["sk"].split("#", 2)
            folder = Path(item["folder"])
            if not (folder / "host.json").exists():
                self.table.delete(HOSTS_PK, item["sk"])
                continue
            keys_file = self.root / workspace / endpoint / "keys.json"
            if keys_file.exists():  # this start has a new forwarding key: put its digest in
                self._write_keys(keys_file, json.loads(keys_file.read_text()).get("endpoint_hashes", []))
            host = _Host(workspace, endpoint, deployment, int(item["revision"]), folder)
            error = self._start(host)
            with self.lock:
                if self.stopped.is_set() or host.key in self.hosts:  # stopping, or redeployed meanwhile
                    self._stop(host)
                    continue
                self.hosts[host.key] = host
            if error is not None:
                host.failed = True
            self._report(host, FAILED if error else SUCCEEDED, error)

    def _supervise(self) -> None:
        while not self.stopped.wait(0.5):
            with self.lock:
                hosts = list(self.hosts.values())
            for host in hosts:
                if host.failed or host.stopping or host.process is None or host.process.poll() is None:
                    continue
                self._restart(host)

    def _restart(self, host: _Host) -> None:
        code = host.process.returncode
        now = time.monotonic()
        if code != RECYCLE_EXIT:
            host.crashes.append(now)
            while host.crashes and now - host.crashes[0] > CRASH_WINDOW_S:
                host.crashes.popleft()
        if len(host.crashes) >= CRASH_LIMIT:
            host.failed = True
            self._report(host, FAILED, f"the scoring host crashed {CRASH_LIMIT} times within "
                                         f"{CRASH_WINDOW_S:.0f} s (last exit code {code}): "
                                         f"{_tail(host.folder / 'host.log', 3).strip()}")
            return
        error = self._start(host)
        if self.stopped.is_set() or host.stopping:  # stopped or removed while it was starting
            self._stop(host)
            return
        if error is not None:
            host.failed = True
            self._report(host, FAILED, error)

    # --- one host ------------------------------------------------------------------------------
    def _write_folder(self, folder: Path, spec: DeploymentSpec) -> None:
        source, models = folder / "source", folder / "models"
        for item in spec.source:
            self._fetch(item.blob_key, _inside(source, item.path))
        index: dict[str, dict[str, str]] = {}
        for model in spec.models:
            base = models / model.name / str(model.version)
            for path, _size in model.files:
                self._fetch(model.blob_prefix + path, _inside(base, path))
            index.setdefault(model.name, {})[str(model.version)] = model.asset_path
        models.mkdir(parents=True, exist_ok=True)
        (models / "models.json").write_text(json.dumps(index))
        keys_file = self.root / spec.workspace / spec.endpoint / "keys.json"
        if not keys_file.exists():
            self._write_keys(keys_file, [])
        config = spec.config
        (folder / "host.json").write_text(json.dumps({
            "workspace": spec.workspace, "endpoint": spec.endpoint, "deployment": spec.deployment,
            "revision": spec.revision, "entry_script": spec.entry_script, "timeout_s": config.timeout_s,
            "capture_rate": config.capture_rate, "capture_prefix": spec.capture_prefix, "keys_file": str(keys_file)}))

    def _prepare_environment(self, folder: Path, environment: DeploymentEnvironment) -> str | None:
        """The environment's virtualenv (built once, shared with runs), recorded in the folder as the
        interpreter its host starts with; the error text when it cannot be built."""
        wanted, own = environment.definition.get("python"), environment_build.running_python()
        if wanted and wanted != own:  # the host's own code runs in the venv, with the platform's packages
            return (f"environment {environment.ref} asks for Python {wanted}; local scoring hosts run the "
                    f"platform's Python {own}: use an environment with python {own!r}")
        home = environment_build.envs_dir({**os.environ, "NIMBUS_HOME": str(self.home)})
        try:
            handle = environment_build.prepare(environment.definition, environment.hash, home)
        except environment_build.EnvironmentBuildError as error:
            return f"environment {environment.ref}: {error}"
        (folder / INTERPRETER_FILE).write_text(json.dumps({"python": handle.python, "env": handle.env}))
        return None

    def _fetch(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        stream, _ = self.blobs.open_for_read(key)
        with stream, open(target, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)

    def _start(self, host: _Host) -> str | None:
        """Start the host process and wait until it answers; the error text when it cannot."""
        for name in ("ready.json", "failed.json", "exit.json"):
            (host.folder / name).unlink(missing_ok=True)
        host.process = self.spawner.spawn(host.folder)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if (host.folder / "ready.json").exists():
                host.port = json.loads((host.folder / "ready.json").read_text())["port"]
                self.spawner.learn(host.folder)
                return None
            if host.process.poll() is not None:
                failed = host.folder / "failed.json"
                if failed.exists():
                    return json.loads(failed.read_text()).get("error") or "init failed"
                return (f"the scoring host exited with code {host.process.returncode} before answering: "
                        f"{_tail(host.folder / 'host.log', 5).strip()}")
            time.sleep(0.05)
        self._stop(host)
        return f"the scoring host did not answer within {self.start_timeout_s:.0f} s"

    def _stop(self, host: _Host) -> None:
        host.stopping = True
        process = host.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # the host flushes its telemetry and exits
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _report(self, host: _Host, state: str, error: str | None) -> None:
        if self.on_state is not None:
            self.on_state(host.workspace, host.endpoint, host.deployment, host.revision, state, error)

    def _write_keys(self, path: Path, key_digests: list[str]) -> None:
        proxy = hashlib.sha256(self.proxy_key.encode()).hexdigest()
        write_private(path, {"hashes": [*key_digests, proxy], "endpoint_hashes": list(key_digests)})

    def _folder(self, workspace: str, endpoint: str, deployment: str) -> Path:
        return self.root / workspace / endpoint / deployment

    @staticmethod
    def _serving(host: _Host | None) -> bool:
        return host is not None and host.port is not None and not host.failed

    @staticmethod
    def _details(host: _Host) -> dict:
        return {"host_url": f"http://127.0.0.1:{host.port}/score", "port": host.port, "revision": host.revision,
                "folder": str(host.folder)}

    def _connection(self, port: int) -> http.client.HTTPConnection:
        pool = self.connections.__dict__.setdefault("pool", {})
        if port not in pool:
            pool[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
        return pool[port]

    def _drop_connection(self, port: int) -> None:
        connection = self.connections.__dict__.get("pool", {}).pop(port, None)
        if connection is not None:
            connection.close()


def _inside(folder: Path, relative: str) -> Path:
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ValueError(f"{relative!r} leaves its folder")
    return target


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024 * max(1, lines // 100 + 1)))
            return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace") + "\n"
    except FileNotFoundError:
        return ""


def _end_orphans(root: Path, grace_s: float = 5.0) -> int:
    """Ends every host a platform that was killed left running: each works in its deployment's folder under
    `root` (a forked host too), holding its port, recorded or not (it may have been starting). SIGTERM lets
    it flush its telemetry; SIGKILL follows after `grace_s`. Returns how many were found."""
    found, root = [], root.resolve()
    for process in psutil.process_iter():
        try:
            # A forked host carries its zygote's command line; both name chalicelib.scoring (a shell
            # that happens to be in the folder is not a host).
            if process.pid != os.getpid() and Path(process.cwd()).is_relative_to(root) \
                    and "chalicelib.scoring" in " ".join(process.cmdline()):
                process.terminate()
                found.append(process)
        except psutil.Error:  # gone, or another user's: not ours to end
            continue
    _, alive = psutil.wait_procs(found, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(found)


def _unavailable(message: str, deployment: str | None = None) -> ScoreResult:
    body = json.dumps({"code": "Unavailable", "message": message}).encode()
    return ScoreResult(503, body, deployment)
