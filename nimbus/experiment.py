"""Experiment: a named group of runs in a workspace, created by the first run that names it."""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from nimbus.client import api_path
from nimbus.exceptions import NotFoundError

if TYPE_CHECKING:
    from nimbus.run import Run
    from nimbus.runconfig import ScriptRunConfig
    from nimbus.workspace import Workspace

PAGE_SIZE = 500


class Experiment:
    def __init__(self, workspace: "Workspace", name: str, *, details: dict | None = None):
        self.workspace = workspace
        self.name = name
        self._details = details

    @classmethod
    def list(cls, workspace: "Workspace") -> list["Experiment"]:
        return list(workspace.experiments().values())

    def start_logging(self, display_name: str | None = None, tags: Mapping[str, str] | None = None,
                      properties: Mapping[str, str] | None = None) -> "Run":
        """A new run of this experiment, already Running, for logging from a notebook or script.

        Use it as a context manager to complete it (or fail it on an exception) automatically.
        """
        from nimbus.run import Run

        return Run.create(self.workspace, experiment=self.name, display_name=display_name, tags=tags,
                          properties=properties)

    def submit(self, config: "ScriptRunConfig", tags: Mapping[str, str] | None = None,
               client_token: str | None = None, show_progress: bool | None = None) -> "Run":
        """Snapshots config.source_directory, uploads what the service lacks and queues a run of it.

        The run also records the git checkout and CI job it came from. `client_token` makes the
        submission safe to repeat: the same token returns the first run instead of a new one.
        """
        from nimbus import snapshot
        from nimbus.progress import ProgressBar, wanted
        from nimbus.run import Run, _strings
        from nimbus.source_info import ci_info, git_info

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
                 max_results: int | None = None, include_children: bool = False) -> Iterator["Run"]:
        """This experiment's runs, newest first unless `order_by` says otherwise.

        status: one status or several. tags: {key: value} (value None: key present) or "key[=value]"
        strings. metric_filters: "acc>0.5" strings (> >= < <= = !=), on each run's latest value.
        order_by: "created|started|ended|duration_s|status|metrics.<name> [asc|desc]".
        max_results: stop after this many runs (default: all of them).
        include_children: also yield child runs (by default only top-level runs, as in Azure ML).
        """
        from nimbus.run import Run

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


def _listed(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _tag_filters(tags: Mapping[str, str | None] | Iterable[str] | str | None) -> list[str]:
    if isinstance(tags, Mapping):
        return [key if value is None else f"{key}={value}" for key, value in tags.items()]
    return _listed(tags)
