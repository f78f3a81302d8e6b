"""An experiment and its runs: the status, tags, properties, children, metrics, logs and files of each run.

Experiment and Run live together because each leads to the other (experiment.submit() gives a run,
run.experiment its experiment), as they do in Azure ML.
"""
from __future__ import annotations

import os
import sys
import traceback
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping

from nimbus import metrics_buffer, snapshot
from nimbus.client import ApiClient, api_path
from nimbus.dataset import OUTPUTS_ENV, Dataset, input_entries
from nimbus.exceptions import ConfigurationError, NimbusError, NotFoundError
from nimbus.keyvault import check_secret_name
from nimbus.model import Model
from nimbus.offline_run import OfflineRun
from nimbus.progress import ProgressBar, wanted
from nimbus.run_logs import RunLogs
from nimbus.run_metrics import RunMetrics
from nimbus.run_outputs import RunOutputs, download_snapshot
from nimbus.runconfig import ScriptRunConfig
from nimbus.runtime.secret_mask import SOCKET_ENV, register_with_runner
from nimbus.source_info import ci_info, git_info
from nimbus.workspace import Workspace

PAGE_SIZE = 500
MAX_ERROR_MESSAGE = 8000  # the service keeps error reports small (32 KB in all)
CONTEXT_ENV = ("NIMBUS_RUN_ID", "NIMBUS_URL", "NIMBUS_RUN_TOKEN", "NIMBUS_WORKSPACE")  # set by the runner


class Experiment:
    def __init__(self, workspace: Workspace, name: str, *, details: dict | None = None):
        self.workspace = workspace
        self.name = name
        self._details = details

    @classmethod
    def list(cls, workspace: Workspace) -> list["Experiment"]:
        """The workspace's experiments, by name."""
        items = workspace.client.paged(api_path("workspaces", workspace.name, "experiments"), "experiments",
                                       {"max_results": 1000})
        return [cls(workspace, e["name"], details=e) for e in items]

    def start_logging(self, display_name: str | None = None, tags: Mapping[str, str] | None = None,
                      properties: Mapping[str, str] | None = None) -> Run:
        """A new run of this experiment, already Running, for logging from a notebook or script.

        Use it as a context manager to complete it (or fail it on an exception) automatically.
        """
        return Run.create(self.workspace, experiment=self.name, display_name=display_name, tags=tags,
                          properties=properties)

    def submit(self, config: ScriptRunConfig, tags: Mapping[str, str] | None = None,
               client_token: str | None = None, show_progress: bool | None = None) -> Run:
        """Snapshots config.source_directory, uploads what the service lacks and queues a run of it.

        The run also records the git checkout and CI job it came from. `client_token` makes the
        submission safe to repeat: the same token returns the first run instead of a new one.
        """
        config.check_files()
        run_config = config.to_dict()
        client, workspace = self.workspace.client, self.workspace.name
        files = snapshot.collect(config.source_directory, **snapshot.limits_from_env())
        content_bytes = sum({f.digest: f.size for f in files}.values())  # identical contents go once
        with ProgressBar(content_bytes, "snapshot", enabled=wanted(show_progress)) as bar:
            uploaded = snapshot.upload(client, workspace, files, bar.update)
        body = {"experiment": self.name, "snapshot_id": uploaded["id"], "run_config": run_config,
                "git": git_info(config.source_directory), "ci": ci_info(), "tags": _strings(tags),
                "client_token": client_token or uuid.uuid4().hex}
        # Retrying is safe only because the token is the same on every attempt.
        details = client.post(api_path("workspaces", workspace, "runs"), body, retry=True)
        return Run(self.workspace, details["id"], details=details)

    def get_runs(self, status: str | Iterable[str] | None = None,
                 tags: Mapping[str, str | None] | Iterable[str] | str | None = None,
                 metric_filters: Iterable[str] | str | None = None, order_by: str | tuple[str, str] | None = None,
                 max_results: int | None = None, include_children: bool = False) -> Iterator[Run]:
        """This experiment's runs, newest first unless `order_by` says otherwise.

        status: one status or several. tags: {key: value} (value None: key present) or "key[=value]"
        strings. metric_filters: "acc>0.5" strings (> >= < <= = !=), on each run's latest value.
        order_by: "created|started|ended|duration_s|status|metrics.<name> [asc|desc]".
        max_results: stop after this many runs (default: all of them).
        include_children: also yield child runs (by default only top-level runs, as in Azure ML).
        """
        params = {"status": _listed(status), "tag": _tag_filters(tags), "metric": _listed(metric_filters),
                  "order_by": " ".join(order_by) if isinstance(order_by, tuple) else order_by,
                  "max_results": min(PAGE_SIZE, max_results) if max_results else PAGE_SIZE,
                  "top_level": None if include_children else "true"}
        if max_results is not None and max_results <= 0:
            return
        path = api_path("workspaces", self.workspace.name, "experiments", self.name, "runs")
        params = {k: v for k, v in params.items() if v not in (None, [])}
        count = 0
        for summary in self.workspace.client.paged(path, "runs", params):
            yield Run(self.workspace, summary["id"], details=summary)
            count += 1
            if max_results is not None and count >= max_results:
                return

    @property
    def run_count(self) -> int:
        """How many runs the experiment has had (0 before its first run)."""
        details = self.get_details()
        return details.get("run_count", 0) if details else 0

    def get_details(self) -> dict | None:
        """The server's view of the experiment, or None when no run has created it yet."""
        try:
            self._details = self.workspace.client.get(api_path("workspaces", self.workspace.name,
                                                               "experiments", self.name))
        except NotFoundError:
            self.workspace.get_details()  # raises when the workspace itself is missing
            return None
        return self._details

    def __repr__(self) -> str:
        return f"Experiment(workspace={self.workspace.name!r}, name={self.name!r})"


class Run(RunMetrics, RunOutputs, RunLogs):
    _submitted = False  # the context run of a submitted script: the runner reports how it ends

    def __init__(self, workspace: Workspace, run_id: str, *, details: dict | None = None):
        self.workspace = workspace
        self._id = run_id
        self._details: dict = dict(details or {})
        self._init_metrics()

    @classmethod
    def get(cls, workspace: Workspace, run_id: str) -> "Run":
        """An existing run; raises NotFoundError when the workspace has no such run."""
        run = cls(workspace, run_id)
        run.get_details()
        return run

    @classmethod
    def get_context(cls, allow_offline: bool = True) -> "Run | OfflineRun":
        """The run a submitted script executes in, found from the NIMBUS_* variables the runner sets.

        Started by hand, a script gets an OfflineRun instead: it prints what it would log and keeps
        metrics in memory, so the same script runs both ways (allow_offline=False raises instead).
        """
        if all(os.environ.get(name) for name in CONTEXT_ENV):
            client = ApiClient(os.environ["NIMBUS_URL"], os.environ["NIMBUS_RUN_TOKEN"])
            run = cls(Workspace(os.environ["NIMBUS_WORKSPACE"], client=client), os.environ["NIMBUS_RUN_ID"])
            run._submitted = True
            return run
        if not allow_offline:
            raise ConfigurationError(f"not inside a submitted run: {', '.join(CONTEXT_ENV)} are not all set")
        return OfflineRun()

    @classmethod
    def create(cls, workspace: Workspace, *, experiment: str | None = None, parent_id: str | None = None,
               display_name: str | None = None, tags: Mapping[str, Any] | None = None,
               properties: Mapping[str, Any] | None = None, status: str = "Running") -> "Run":
        body = {"experiment": experiment, "parent_id": parent_id, "display_name": display_name,
                "tags": _strings(tags), "properties": _strings(properties), "status": status}
        details = workspace.client.post(api_path("workspaces", workspace.name, "runs"),
                                        {k: v for k, v in body.items() if v is not None})
        return cls(workspace, details["id"], details=details)

    # --- what the run is ----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._id

    @property
    def status(self) -> str:
        """The status last seen by this object; get_status() asks the service."""
        return self._detail("status")

    @property
    def display_name(self) -> str:
        return self._detail("display_name")

    @property
    def experiment(self) -> Experiment:
        return Experiment(self.workspace, self._detail("experiment"))

    @property
    def parent(self) -> "Run | None":
        parent_id = self._detail("parent_id")
        return Run(self.workspace, parent_id) if parent_id else None

    @property
    def tags(self) -> dict:
        return dict(self._detail("tags") or {})

    @property
    def properties(self) -> dict:
        return dict(self._detail("properties") or {})

    @property
    def details(self) -> dict:
        """The service's view of the run when this object last heard from it (no request)."""
        return dict(self._details)

    def get_details(self) -> dict:
        """The service's current view of the run."""
        self._details = self.workspace.client.get(self._path())
        return dict(self._details)

    def get_status(self) -> str:
        return self.get_details()["status"]

    def get_tags(self) -> dict:
        return dict(self.get_details()["tags"] or {})

    def get_properties(self) -> dict:
        return dict(self.get_details()["properties"] or {})

    # --- tags and properties --------------------------------------------------------------------------
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Sets (or overwrites) tags; values are stored as strings."""
        if not tags:
            return
        self._update(self.workspace.client.request("PATCH", self._path("tags"), json={"tags": _strings(tags)}))

    def tag(self, key: str, value: Any = "") -> None:
        self.set_tags({key: value})

    def remove_tags(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        self._update(self.workspace.client.request("PATCH", self._path("tags"), json={"remove": keys}))

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Adds properties. They are write-once: changing one raises ConflictError."""
        self._update(self.workspace.client.post(self._path("properties"), {"properties": _strings(properties)},
                                                retry=True))

    # --- children ---------------------------------------------------------------------------------
    def child_run(self, name: str | None = None, tags: Mapping[str, Any] | None = None,
                  properties: Mapping[str, Any] | None = None) -> "Run":
        """A new Running run under this one, in the same experiment."""
        return Run.create(self.workspace, parent_id=self.id, display_name=name, tags=tags, properties=properties)

    def get_children(self, recursive: bool = False) -> list["Run"]:
        """Direct children, oldest first; with `recursive`, their descendants follow, level by level."""
        found, level = [], [self]
        while level:
            children = [child for run in level for child in run._direct_children()]
            found += children
            level = children if recursive else []
        return found

    def _direct_children(self) -> list["Run"]:
        items = self.workspace.client.paged(self._path("children"), "runs", {"max_results": 1000})
        return [Run(self.workspace, item["id"], details=item) for item in items]

    # --- ending -----------------------------------------------------------------------------------
    def complete(self) -> None:
        """Sends every metric still buffered, then marks the run Completed.

        In a submitted script it only sends the metrics: the runner marks the run once the script has
        ended and its outputs are uploaded (the run's token stops working once the run is Completed).
        """
        if self._submitted:
            self.flush()
            return
        self._finish(lambda: self._set_status("Completed"))

    def fail(self, error_details: BaseException | Mapping | str | None = None, error_code: str | None = None) -> None:
        """Sends every metric still buffered, then marks the run Failed with the error given."""
        error = _error_record(error_details)
        if error_code:
            error["code"] = error_code
        self._finish(lambda: self._set_status("Failed", error))

    def cancel(self) -> None:
        self._finish(lambda: self._update(self.workspace.client.post(self._path("cancel"), retry=True)))

    def _finish(self, change_status: Callable[[], None]) -> None:
        # The status changes even when the service refused some metrics; that refusal is raised after.
        try:
            self.flush()
        except NimbusError as refused:
            change_status()
            raise refused
        change_status()
        metrics_buffer.buffer().forget(self._metrics_key)

    def _set_status(self, status: str, error: dict | None = None) -> None:
        body = {"status": status} if error is None else {"status": status, "error": error}
        self._update(self.workspace.client.post(self._path("status"), body, retry=True))

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is None:
            self.complete()
            return
        try:
            if self._submitted:  # the error ends the script, and the runner reports it with stderr's tail
                self.flush()
                return
            self.cancel() if isinstance(error, KeyboardInterrupt) else self.fail(error)
        except NimbusError as problem:  # the user's own exception matters more: report and let it through
            print(f"nimbus: could not record the end of run {self.id}: {problem}", file=sys.stderr)

    # --- inputs -------------------------------------------------------------------------------------
    @property
    def input_datasets(self) -> dict[str, Any]:
        """The run's dataset inputs by name: a downloaded (or mounted) one as its local folder, a direct
        one as the dataset itself (a TabularDataset to read). Empty outside a submitted run."""
        found = {}
        for name, entry in input_entries().items():
            if entry.get("path"):
                found[name] = entry["path"]
            else:
                found[name] = Dataset.get_by_name(self.workspace, entry["dataset"], entry["version"])
        return found

    def get_datasets(self) -> dict:
        """The dataset versions the run read ({name, version, fingerprint, input, mode}) and those it wrote."""
        return self.workspace.client.get(self._path("datasets"))

    @property
    def output_datasets(self) -> dict[str, str]:
        """The local folder of each of the run's outputs: what the script writes there is uploaded to the
        output's datastore when it succeeds. Empty outside a submitted run."""
        return {name: entry["path"] for name, entry in input_entries(variable=OUTPUTS_ENV).items()}

    # --- secrets ------------------------------------------------------------------------------------
    def get_secret(self, name: str) -> str:
        """The value of the workspace's secret `name`, for a submitted script (its run token reads it; no
        person's token may). The runner masks the value as *** in the run's logs from then on."""
        value = self.workspace.client.get(self._path("secrets", check_secret_name(name)))["value"]
        mask_socket = os.environ.get(SOCKET_ENV)
        if mask_socket:
            try:
                register_with_runner(value, mask_socket)
            except OSError as err:  # unmasked, the value could reach the log: better not to hand it out
                raise NimbusError(f"secret {name!r} could not be masked in the run's logs ({err}); "
                                  "it is not handed out") from None
        return value

    def get_secrets(self, secrets: Iterable[str]) -> dict[str, str]:
        return {name: self.get_secret(name) for name in secrets}

    def download_snapshot(self, output_directory: str = ".", as_zip: bool = False) -> "list[str] | str":
        """The code this run executed (submitted runs only): files under output_directory, or one zip."""
        return download_snapshot(self, output_directory, as_zip)

    def register_model(self, model_name: str, model_path: str, tags: Mapping[str, Any] | None = None,
                       properties: Mapping[str, Any] | None = None, description: str | None = None,
                       model_framework: str | None = None, model_framework_version: str | None = None) -> Model:
        """Registers a stored file or folder of this run (e.g. "outputs/model.pkl") as the model's next
        version. The service copies it: no bytes pass through here. Inside a submitted script, upload the
        file first (upload_file): the runner stores ./outputs only after the script has ended."""
        body = {"run_id": self.id, "path": model_path, "tags": _strings(tags), "properties": _strings(properties),
                "description": description, "framework": model_framework, "framework_version": model_framework_version}
        details = self.workspace.client.post(api_path("workspaces", self.workspace.name, "models", model_name, "versions"),
                                             {k: v for k, v in body.items() if v is not None})
        return Model(self.workspace, model_name, details=details)

    # --- internals --------------------------------------------------------------------------------
    def _path(self, *more: str) -> str:
        return api_path("workspaces", self.workspace.name, "runs", self.id, *more)

    def _detail(self, key: str) -> Any:
        if key not in self._details:
            self.get_details()
        return self._details.get(key)

    def _update(self, details: dict) -> None:
        self._details = details

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, workspace={self.workspace.name!r}, status={self._details.get('status')!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and (self.id, self.workspace) == (other.id, other.workspace)

    def __hash__(self) -> int:
        return hash(self.id)


def _strings(entries: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else str(v) for k, v in (entries or {}).items()}


def _error_record(details: BaseException | Mapping | str | None) -> dict:
    if details is None:
        return {"message": "the run failed"}
    if isinstance(details, BaseException):
        trace = "".join(traceback.format_exception(type(details), details, details.__traceback__))
        kind = type(details).__name__
        return {"message": (str(details) or kind)[:MAX_ERROR_MESSAGE], "type": kind,
                "traceback": trace[-MAX_ERROR_MESSAGE:]}
    if isinstance(details, Mapping):
        return dict(details)
    return {"message": str(details)[:MAX_ERROR_MESSAGE]}


def _listed(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _tag_filters(tags: Mapping[str, str | None] | Iterable[str] | str | None) -> list[str]:
    if isinstance(tags, Mapping):
        return [key if value is None else f"{key}={value}" for key, value in tags.items()]
    return _listed(tags)
