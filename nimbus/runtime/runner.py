"""The runner: executes one submitted run (`python -m nimbus.runtime.runner`) and reports it to the service.

The worker starts it with NIMBUS_URL, NIMBUS_RUN_TOKEN, NIMBUS_WORKSPACE, NIMBUS_RUN_ID and optionally
NIMBUS_JOB_DIR (default: the current folder); on AWS Batch, AWS_BATCH_JOB_ATTEMPT numbers the job's
attempt, and the token may come sealed instead (NIMBUS_RUN_TOKEN_SEALED, opened with KMS: see
nimbus/runtime/sealed_token.py). See docs/execution.md, "The runner".

Each runner process names itself (a random `runner_id`) in its reports and heartbeats, with its Batch
attempt: the service holds the run for the runner whose Preparing it accepted, restarts the run for a
later attempt's runner, and refuses (409) the others, which then stop the script and leave the run
alone (docs/compute.md, "Retries and runner identity").

Exit codes: 0 when the run's outcome was reported, or the run ended elsewhere (canceled), or another
runner holds it; 1 when the outcome could not be reported (the service stayed unreachable, or refused);
2 when the environment is incomplete or its sealed run token cannot be opened; 143 when stopped by
SIGTERM, leaving the run's status to whoever stopped the runner. On a child node of a Batch multi-node
job, whose runner leaves the run's lifecycle to the main node's, a rank that fails makes it exit with
that rank's code (128 + the signal for a killed rank).
"""
from __future__ import annotations

import functools
import os
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from nimbus import snapshot
from nimbus.client import ApiClient, api_path
from nimbus.exceptions import (
    AuthenticationError, ConfigurationError, ConflictError, NimbusError, ServiceUnavailableError,
)
from nimbus.experiment import Run
from nimbus.runtime import environment_build, ranks, run_datasets, run_isolation, sealed_token
from nimbus.runtime.environment_build import EnvironmentHandle
from nimbus.runtime.heartbeat import Heartbeat
from nimbus.runtime.run_states import TERMINAL
from nimbus.runtime.runner_io import Outcome, RunEnded, ScriptProcess, note
from nimbus.runtime.secret_mask import SOCKET_ENV, MaskServer, SecretMask
from nimbus.workspace import Workspace

EXIT_REPORTED, EXIT_UNREPORTED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 128 + signal.SIGTERM
HEARTBEAT_SECONDS = 60.0  # the service fails a Running run on Batch after 10 minutes without one
RUNNER_ATTEMPTS = 10  # about 40 s of back-off before the service is taken to be unreachable
REQUIRED_ENV = ("NIMBUS_URL", "NIMBUS_RUN_TOKEN", "NIMBUS_WORKSPACE", "NIMBUS_RUN_ID")

Extract = Callable[[list, Path, Any], Any]


class Stopped(BaseException):
    """SIGTERM before the script started (a BaseException, so no handler for errors swallows it)."""


class PreparationError(Exception):
    """The run cannot be started as submitted."""


class Superseded(RunEnded):
    """Another runner holds the run: a later Batch attempt, or an agent that claimed the run again."""


@dataclass(frozen=True)
class JobSettings:
    url: str
    token: str
    workspace: str
    run_id: str
    job_dir: Path
    attempt: int = 1  # the AWS Batch job's attempt (1-based); 1 elsewhere

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, kms=None) -> "JobSettings":
        """The job's settings. Without NIMBUS_RUN_TOKEN, a NIMBUS_RUN_TOKEN_SEALED is opened with KMS (`kms`:
        a client, default one for AWS_REGION / AWS_DEFAULT_REGION); ConfigurationError when it cannot be."""
        env = os.environ if env is None else env
        sealed = "" if env.get("NIMBUS_RUN_TOKEN") else env.get(sealed_token.SEALED_ENV, "")
        missing = [name for name in REQUIRED_ENV if not env.get(name) and not (name == "NIMBUS_RUN_TOKEN" and sealed)]
        if missing:
            raise ConfigurationError(f"the runner needs {', '.join(missing)} in its environment")
        attempt = env.get("AWS_BATCH_JOB_ATTEMPT") or "1"
        if not (attempt.isascii() and attempt.isdigit() and int(attempt) >= 1):
            raise ConfigurationError(f"AWS_BATCH_JOB_ATTEMPT must be a whole number of at least 1, not {attempt!r}")
        token = env.get("NIMBUS_RUN_TOKEN") or _open_sealed(sealed, env["NIMBUS_RUN_ID"], env, kms)
        return cls(env["NIMBUS_URL"], token, env["NIMBUS_WORKSPACE"], env["NIMBUS_RUN_ID"],
                   Path(env.get("NIMBUS_JOB_DIR") or os.getcwd()), int(attempt))

    def script_env(self) -> dict[str, str]:
        """What Run.get_context() in the script needs to find this run."""
        return {"NIMBUS_URL": self.url, "NIMBUS_RUN_TOKEN": self.token, "NIMBUS_WORKSPACE": self.workspace,
                "NIMBUS_RUN_ID": self.run_id}


def _open_sealed(sealed: str, run_id: str, env: Mapping[str, str], kms) -> str:
    try:
        return sealed_token.open_sealed(sealed, run_id, kms=kms, env=env)
    except sealed_token.SealedTokenError as err:
        raise ConfigurationError(f"the run token cannot be opened: {err}") from None


def prepare_for_run(client: ApiClient, workspace: str, ref: str, home: Path | None = None) -> EnvironmentHandle:
    """The environment version 'name[:version]' names (a run token may read it): its venv here, or the runner's
    own interpreter inside the environment's image (built on AWS with NIMBUS_ENVIRONMENT_HASH set:
    chalicelib/compute/image_build.py)."""
    name, _, version = ref.partition(":")
    found = client.get(api_path("workspaces", workspace, "environments", name, "versions", version or "latest"))
    definition, digest = found["definition"], found["hash"]
    if os.environ.get("NIMBUS_ENVIRONMENT_HASH") == digest:
        return EnvironmentHandle(sys.executable, {str(k): str(v) for k, v in (definition.get("variables") or {}).items()})
    return environment_build.prepare(definition, digest, environment_build.envs_dir() if home is None else home)


def prepare_environment(run_config: Mapping[str, Any], client: ApiClient | None = None,
                        workspace: str | None = None) -> EnvironmentHandle:
    """The interpreter and extra variables the script runs with: the runner's own interpreter, or the
    virtualenv of run_config["environment"], built once per definition under NIMBUS_ENVS_DIR (default
    $NIMBUS_HOME/envs) while the run is Preparing (nimbus/runtime/environment_build.py)."""
    ref = run_config.get("environment")
    if not ref:
        return EnvironmentHandle(sys.executable)
    if client is None or workspace is None:
        raise PreparationError(f"environment {ref!r} needs the service to be read from")
    try:
        return prepare_for_run(client, workspace, str(ref))
    except environment_build.EnvironmentBuildError as err:
        raise PreparationError(str(err)) from None


def build_command(run_config: Mapping[str, Any], python: str) -> list[str]:
    """`python <script> <arguments>`, or the command line split like a shell would (but without one)."""
    arguments = [str(value) for value in run_config.get("arguments") or []]
    if run_config.get("script"):
        return [python, str(run_config["script"]), *arguments]
    command = run_config.get("command")
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command or []]
    if not argv:
        raise PreparationError("run_config names neither a script nor a command")
    if argv[0] in ("python", "python3"):  # the prepared environment's interpreter, not whatever is on PATH
        argv[0] = python
    return argv + arguments


class Runner:
    def __init__(self, settings: JobSettings, client: ApiClient, *, extract: Extract | None = None,
                 prepare: Callable[[Mapping], EnvironmentHandle] | None = None, echo: bool = True):
        self.settings, self.client = settings, client
        self.run = Run(Workspace(settings.workspace, client=client), settings.run_id)
        self._extract, self._echo = extract, echo
        self._prepare = prepare or functools.partial(prepare_environment, client=client, workspace=settings.workspace)
        self._stopping = threading.Event()
        self.heartbeat_s = HEARTBEAT_SECONDS
        self._script: ScriptProcess | ranks.RankGroup | None = None
        self.runner_id = uuid.uuid4().hex  # this process, for the service to tell runners of one run apart
        self._main = True  # reports the run's lifecycle (not a child node of a Batch multi-node job)
        self._holds = False  # the service accepted this runner's Preparing
        self._lost: RunEnded | None = None  # the run ended, or went to another runner, as a heartbeat learnt
        self._confinement = run_isolation.Confinement.from_env(os.environ)  # None: as started (AWS Batch)
        self.mask = SecretMask()  # every secret value the run read: *** in its logs
        self._secret_env: dict[str, str] = {}
        self._inputs: dict[str, dict] = {}  # the run's dataset inputs, once ready (run_datasets.py)
        self._outputs: dict[str, dict] = {}  # and the folders of its outputs

    def stop(self) -> bool:
        """SIGTERM: passed on to the script's process group. False when no script was started yet."""
        self._stopping.set()
        if self._script is None:
            return False
        self._script.signal(signal.SIGTERM)
        return True

    def execute(self) -> int:
        try:
            with Heartbeat(self._beat, self.heartbeat_s):
                return self._execute()
        except Superseded as err:
            note(f"another runner holds the run ({err}); stopping without reporting")
            return EXIT_REPORTED
        except RunEnded:
            note("the run was ended elsewhere (canceled, or stopped by the service); stopping")
            return EXIT_REPORTED
        except Stopped:
            return EXIT_STOPPED
        except NimbusError as err:
            note(f"{err}; the run's outcome is not reported")
            return EXIT_UNREPORTED
        finally:
            if self._script is not None:
                self._script.kill()

    def _execute(self) -> int:
        try:
            details = self.client.get(self._path())
        except AuthenticationError as err:
            note(f"the run token was refused ({err}): the run has ended, or the token is wrong")
            return EXIT_UNREPORTED
        self._main = ranks.main_node(os.environ)
        if self._main:  # a Batch child node leaves the run's lifecycle to the main node
            self._report("Preparing")  # refused unless this runner may hold the run: see _refused
            self._holds = True
        try:
            config = details.get("run_config")
            if not isinstance(config, Mapping):
                raise PreparationError("the run has no run_config: it was not submitted to run a script")
            code_dir = self._fetch_snapshot(details.get("snapshot_id"))
            self._secret_env = self._read_secret_variables(config)
            handle = self._prepare(config)
            workspace = Workspace(self.settings.workspace, client=self.client)
            self._inputs = run_datasets.materialise(config, workspace, code_dir, self._log_sender("stdout"))
            self._outputs = run_datasets.prepare_outputs(config, code_dir)
            argv = run_datasets.substitute(build_command(config, handle.python), self._inputs, self._outputs)
            placement = ranks.plan(config, os.environ)
        except (PreparationError, ranks.PlacementError, NimbusError, OSError, ValueError) as err:
            self._reraise_unless_refused(err)
            self._report("Failed", {"message": f"preparing the run failed: {err}"})
            return EXIT_REPORTED
        if self._stopping.is_set():
            return EXIT_STOPPED
        self._check_held()
        if not placement.main:
            return self._execute_child(argv, code_dir, config, handle, placement)
        self._report("Running")
        outcome = self._run_script(argv, code_dir, self._script_env(config, handle), placement, handle.python)
        if self._stopping.is_set():
            return EXIT_STOPPED
        self._report("Finalizing")
        problem = self._upload_outputs(code_dir)
        if problem is None and outcome.exit_code == 0:
            workspace = Workspace(self.settings.workspace, client=self.client)
            problem = run_datasets.deliver_outputs(self._outputs, workspace, self._log_sender("stdout"))
        self._record_usage(outcome)
        if outcome.exit_code == 0 and problem is None:
            self._report("Completed")
        else:
            self._report("Failed", _failure(_describe(config), outcome, problem))
        return EXIT_REPORTED

    def _execute_child(self, argv: list[str], code_dir: Path, config: Mapping[str, Any], handle: EnvironmentHandle,
                       placement: ranks.Placement) -> int:
        """A child node of a Batch multi-node job runs its ranks and reports only their failure: the main
        node reports the run's lifecycle, its standard metrics and its ./outputs."""
        outcome = self._run_script(argv, code_dir, self._script_env(config, handle), placement, handle.python)
        if self._stopping.is_set():
            return EXIT_STOPPED
        if outcome.exit_code == 0:
            return EXIT_REPORTED
        try:
            self._report("Failed", _failure(_describe(config), outcome, None, node=placement.nodes[0]))
        except RunEnded:
            pass  # the run ended first (the main node's report, a cancel): nothing for this node to add
        return outcome.exit_code if outcome.exit_code > 0 else 128 - outcome.exit_code

    # --- the script -------------------------------------------------------------------------------
    def _run_script(self, argv: list[str], code_dir: Path, env: dict[str, str], placement: ranks.Placement,
                    python: str) -> Outcome:
        (code_dir / "outputs").mkdir(exist_ok=True)
        job_dir = self.settings.job_dir
        # The script's own secret reads (Run.get_secret) are masked from the moment they return.
        script_uid = self._confinement.uid if self._confinement is not None else None
        mask_server = MaskServer(self.mask, owner=script_uid).start()
        env = {**env, SOCKET_ENV: mask_server.path}
        try:
            # Out of the platform's reach: its own uid, or a Landlock sandbox (nimbus/runtime/run_isolation.py)
            env = {**env, **run_isolation.prepare_folders(self._confinement, job_dir, code_dir)}
            own = [code_dir, *(job_dir / name for name in run_isolation.RUN_FOLDERS)]
            with run_isolation.popen_options(self._confinement, python, own) as options:
                # One process, or node_count × process_count_per_node ranks supervised as one (nimbus/runtime/ranks.py)
                self._script = ranks.start_script(argv, code_dir, env, self._log_sender, placement, echo=self._echo,
                                                  popen_options=options, mask=self.mask)
                self._script.start()
        except (OSError, subprocess.SubprocessError) as err:  # 127, as a shell reports a command it cannot run
            mask_server.close()
            return Outcome(127, 0.0, 0.0, 0.0, f"cannot start {argv[0]}: {getattr(err, 'strerror', None) or err}")
        try:
            if self._stopping.is_set():
                self._script.signal(signal.SIGTERM)
            if self._lost is not None:  # lost while the script was starting
                self._script.end()
            outcome = self._script.wait()
        finally:
            mask_server.close()
        self._check_held()
        if outcome.run_ended:
            raise RunEnded()
        return outcome

    def _script_env(self, config: Mapping[str, Any], handle: EnvironmentHandle) -> dict[str, str]:
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (config.get("environment_variables") or {}).items()})
        env.update(handle.env)
        env.update(self._secret_env)
        env[run_datasets.ENV] = run_datasets.env_value(self._inputs)
        env[run_datasets.OUTPUTS_ENV] = run_datasets.env_value(self._outputs)
        env.update(self.settings.script_env())  # last: the script must find its own run
        env.pop(run_isolation.ENV, None)  # the runner's business
        env["PYTHONUNBUFFERED"] = "1"  # output reaches the log as it is printed
        return env

    def _read_secret_variables(self, config: Mapping[str, Any]) -> dict[str, str]:
        """run_config["secret_variables"] ({variable: secret name}) read with the run's token, each value
        masked in the run's logs before the script starts."""
        values = {}
        for variable, name in (config.get("secret_variables") or {}).items():
            reply = self.client.get(self._path("secrets", str(name)))
            self.mask.add(reply["value"])
            values[str(variable)] = reply["value"]
        return values

    # --- talking to the service -------------------------------------------------------------------
    def _identity(self) -> dict:
        """What the service tells runners apart by: the Batch attempt, and this runner's id on the node that
        reports the run's lifecycle (a child node reports with its attempt only)."""
        return {"attempt": self.settings.attempt, **({"runner_id": self.runner_id} if self._main else {})}

    def _report(self, status: str, error: dict | None = None) -> None:
        self._check_held()
        body = {"status": status, **self._identity(), **({} if error is None else {"error": error})}
        try:
            # Safe to retry: the service answers this runner's repeated report with the run as it is.
            self.run._update(self.client.post(self._path("status"), body, retry=True))
        except (AuthenticationError, ConflictError) as err:
            self._refused(err)
            raise

    def _beat(self) -> None:
        body = {"attempt": self.settings.attempt, **({"runner_id": self.runner_id} if self._holds else {})}
        try:
            self.client.post(self._path("heartbeat"), body, retry=False)  # one try: the next beat is the retry
        except (AuthenticationError, ConflictError) as err:
            try:
                self._refused(err)
            except RunEnded as lost:  # the script's work is moot: stop it, and report nothing more
                self._lost = lost
                if self._script is not None:
                    self._script.end()

    def _check_held(self) -> None:
        if self._lost is not None:
            raise self._lost

    def _refused(self, refusal: NimbusError) -> None:
        """After the service refused a request: raises RunEnded when the run is over, Superseded when
        another runner or a later attempt holds it; returns when it is still this runner's."""
        # A run token stops working once its run has ended (or its lease went to another agent).
        if isinstance(refusal, AuthenticationError):
            raise RunEnded() from refusal
        try:
            run = self.client.get(self._path())
        except AuthenticationError:
            raise RunEnded() from refusal
        if run["status"] in TERMINAL:
            raise RunEnded() from refusal
        attempt, holder = run.get("attempt") or 1, run.get("runner_id")
        if attempt > self.settings.attempt or (self._main and holder is not None and holder != self.runner_id):
            raise Superseded(f"attempt {attempt}, runner {holder}") from refusal

    def _reraise_unless_refused(self, err: BaseException) -> None:
        """Unreachable service or a run closed meanwhile: not the run's failure, so not reported as one."""
        if isinstance(err, ServiceUnavailableError):
            raise err
        if isinstance(err, (AuthenticationError, ConflictError)):
            self._refused(err)

    def _fetch_snapshot(self, snapshot_id: str | None) -> Path:
        if not snapshot_id:
            raise PreparationError("the run has no snapshot")
        reply = self.client.get(api_path("workspaces", self.settings.workspace, "snapshots", snapshot_id, "downloads"))
        code_dir = self.settings.job_dir / "code"
        code_dir.mkdir(parents=True, exist_ok=True)
        (self._extract or snapshot.extract)(reply["files"], code_dir, self.client)
        return code_dir

    def _log_sender(self, stream: str) -> Callable[[str], None]:
        path = self._path("logs", stream)

        def send(text: str) -> None:
            try:
                # An append is not idempotent: a reply lost after the service stored the text repeats
                # that chunk. A repeated chunk beats a lost one.
                self.client.post(path, {"text": text}, retry=True)
            except (AuthenticationError, ConflictError) as err:
                self._refused(err)
                raise

        return send

    def _upload_outputs(self, code_dir: Path) -> str | None:
        """Uploads ./outputs as Run.upload_folder("outputs", ...) would; returns why it failed, if it did."""
        folder = code_dir / "outputs"
        if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
            return None
        try:
            self.run.upload_folder("outputs", folder, show_progress=False)
        except (NimbusError, OSError) as err:
            self._reraise_unless_refused(err)
            return str(err)
        return None

    def _record_usage(self, outcome: Outcome) -> None:
        self.run.log("duration_s", outcome.duration_s)
        self.run.log("peak_memory_mb", outcome.peak_memory_mb)
        self.run.log("cpu_time_s", outcome.cpu_time_s)
        try:
            self.run.flush()
        except NimbusError as err:
            self._reraise_unless_refused(err)
            note(f"the standard metrics were not stored: {err}")

    def _path(self, *more: str) -> str:
        return api_path("workspaces", self.settings.workspace, "runs", self.settings.run_id, *more)


def _failure(name: str, outcome: Outcome, problem: str | None, node: int | None = None) -> dict:
    code = outcome.exit_code
    if code == 0:
        return {"message": f"uploading the outputs failed: {problem}"}
    if code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    if outcome.rank is not None:
        name = f"{name} rank {outcome.rank}"
    if node is not None:
        name = f"{name} on node {node}"
    error = {"message": f"{name} {how}", "exit_code": code, "stderr_tail": outcome.stderr_tail}
    if outcome.rank is not None:
        error["rank"] = outcome.rank
    if node is not None:
        error["node"] = node
    if problem is not None:
        error["outputs_error"] = problem
    return error


def _describe(config: Mapping[str, Any]) -> str:
    text = str(config.get("script") or config.get("command") or "the script")
    return text if len(text) <= 200 else text[:197] + "..."


def main() -> int:
    try:
        settings = JobSettings.from_env()
    except ConfigurationError as err:
        note(str(err))
        return EXIT_USAGE
    client = ApiClient(settings.url, settings.token, attempts=RUNNER_ATTEMPTS)
    try:
        runner = Runner(settings, client)
    except run_isolation.IsolationError as err:
        note(str(err))
        client.close()
        return EXIT_USAGE

    def on_signal(signum: int, frame: Any) -> None:
        if not runner.stop():
            raise Stopped()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return runner.execute()
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
