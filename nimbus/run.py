"""Run: one execution of an experiment, with its status, tags, properties, children, metrics and files."""
from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from nimbus import metrics_buffer
from nimbus.client import api_path
from nimbus.exceptions import ConfigurationError, NimbusError
from nimbus.run_logs import follow_logs
from nimbus.run_metrics import RunMetrics
from nimbus.run_outputs import RunOutputs

if TYPE_CHECKING:
    from nimbus.experiment import Experiment
    from nimbus.model import Model
    from nimbus.offline_run import OfflineRun
    from nimbus.workspace import Workspace

MAX_LOG_APPEND = 256 * 1024  # characters the server takes per append
MAX_ERROR_MESSAGE = 8000  # the service keeps error reports small (32 KB in all)
CONTEXT_ENV = ("NIMBUS_RUN_ID", "NIMBUS_URL", "NIMBUS_RUN_TOKEN", "NIMBUS_WORKSPACE")  # set by the runner


class Run(RunMetrics, RunOutputs):
    _submitted = False  # the context run of a submitted script: the runner reports how it ends

    def __init__(self, workspace: "Workspace", run_id: str, *, details: dict | None = None):
        self.workspace = workspace
        self._id = run_id
        self._details: dict = dict(details or {})
        self._init_metrics()

    @classmethod
    def get(cls, workspace: "Workspace", run_id: str) -> "Run":
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
            from nimbus.client import ApiClient
            from nimbus.workspace import Workspace

            client = ApiClient(os.environ["NIMBUS_URL"], os.environ["NIMBUS_RUN_TOKEN"])
            run = cls(Workspace(os.environ["NIMBUS_WORKSPACE"], client=client), os.environ["NIMBUS_RUN_ID"])
            run._submitted = True
            return run
        if not allow_offline:
            raise ConfigurationError(f"not inside a submitted run: {', '.join(CONTEXT_ENV)} are not all set")
        from nimbus.offline_run import OfflineRun

        return OfflineRun()

    @classmethod
    def create(cls, workspace: "Workspace", *, experiment: str | None = None, parent_id: str | None = None,
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
    def experiment(self) -> "Experiment":
        from nimbus.experiment import Experiment

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

    # --- logs -------------------------------------------------------------------------------------
    def get_logs(self, stream: str = "stdout", offset: int = 0) -> dict:
        """Text of a log stream from `offset`: {text, next_offset, run_status, run_ended}."""
        return self.workspace.client.get(self._path("logs", stream), offset=offset)

    def get_log_streams(self) -> list[dict]:
        return self.workspace.client.get(self._path("logs"))["streams"]

    def append_log(self, text: str, stream: str = "stdout") -> None:
        for start in range(0, len(text), MAX_LOG_APPEND):
            self.workspace.client.post(self._path("logs", stream), {"text": text[start:start + MAX_LOG_APPEND]})

    def download_snapshot(self, output_directory: str = ".", as_zip: bool = False) -> "list[str] | str":
        """The code this run executed (submitted runs only): files under output_directory, or one zip."""
        from nimbus.run_outputs import download_snapshot

        return download_snapshot(self, output_directory, as_zip)

    def register_model(self, model_name: str, model_path: str, tags: Mapping[str, Any] | None = None,
                       properties: Mapping[str, Any] | None = None, description: str | None = None,
                       model_framework: str | None = None, model_framework_version: str | None = None) -> "Model":
        """Registers a stored file or folder of this run (e.g. "outputs/model.pkl") as the model's next
        version. The service copies it: no bytes pass through here. Inside a submitted script, upload the
        file first (upload_file): the runner stores ./outputs only after the script has ended."""
        from nimbus.model import Model

        body = {"run_id": self.id, "path": model_path, "tags": _strings(tags), "properties": _strings(properties),
                "description": description, "framework": model_framework, "framework_version": model_framework_version}
        details = self.workspace.client.post(api_path("workspaces", self.workspace.name, "models", model_name, "versions"),
                                             {k: v for k, v in body.items() if v is not None})
        return Model(self.workspace, model_name, details=details)

    def wait_for_completion(self, show_output: bool = False, stream: str = "stdout",
                            poll_seconds: float = 2.0) -> dict:
        """Blocks until the run ends (printing its log when `show_output`); returns its details."""
        write = (lambda text: (sys.stdout.write(text), sys.stdout.flush())) if show_output else None
        follow_logs(self, stream=stream, write=write, poll_seconds=poll_seconds)
        return self.get_details()

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
