"""ComputeTarget: where submitted runs execute — `local`, an AWS Batch cluster, or an instance running an agent.

    from nimbus import ComputeTarget, Workspace

    ws = Workspace()
    box = ComputeTarget.create(ws, "gpu-box", "instance", {"max_concurrent_runs": 2})
    # on the machine: nimbus agent --compute gpu-box
    cluster = ComputeTarget.create(ws, "cpu", "batch", {"provisioning": "FARGATE", "subnets": [...],
                                                        "security_group_ids": [...]})  # waits until it is ready
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from nimbus.client import api_path
from nimbus.exceptions import NimbusError, NotFoundError

if TYPE_CHECKING:
    from nimbus.workspace import Workspace

CREATE_TIMEOUT_S = 30 * 60.0  # the service itself fails a cluster still being created after 30 minutes
POLL_SECONDS = 5.0


class ComputeTargetFailed(NimbusError):
    """The target's creation failed; `message` is the service's reason (AWS Batch's, for a cluster)."""

    code = "ComputeTargetFailed"


class ComputeTargetTimeout(NimbusError, TimeoutError):
    """The target was still being created when the wait ended; it goes on without the caller."""

    code = "Timeout"


class ComputeTarget:
    """A compute target of a workspace; its details are fetched on first use (`refresh()` reads them again)."""

    def __init__(self, workspace: "Workspace", name: str, *, details: dict | None = None):
        self.workspace = workspace
        self.name = name
        self._details = details

    @classmethod
    def create(cls, workspace: "Workspace", name: str, type: str, settings: Mapping[str, Any] | None = None, *,
               wait: bool = True, timeout_s: float = CREATE_TIMEOUT_S, poll_seconds: float = POLL_SECONDS) -> \
            "ComputeTarget":
        """Registers a target: `batch` (the service creates an AWS Batch cluster, which takes minutes, or
        attaches an existing queue) or `instance`. Waits until the target is usable (`wait=False`: returns
        while it is still `Creating`; see wait_for_completion). Raises InvalidError naming a bad setting,
        ConflictError if the name is taken, ComputeTargetFailed with the reason when the cluster could not
        be made, ComputeTargetTimeout when it is not ready within `timeout_s`."""
        details = workspace.client.post(api_path("workspaces", workspace.name, "computes"),
                                        {"name": name, "type": type, "settings": dict(settings or {})})
        target = cls(workspace, name, details=details)
        if wait:
            target.wait_for_completion(timeout_s=timeout_s, poll_seconds=poll_seconds)
        return target

    def wait_for_completion(self, timeout_s: float = CREATE_TIMEOUT_S, poll_seconds: float = POLL_SECONDS, *,
                            sleep: Callable[[float], None] = time.sleep) -> dict:
        """Blocks while the target is `Creating`; returns its details once Succeeded. Raises
        ComputeTargetFailed (with the service's reason) or ComputeTargetTimeout."""
        details = self._details if self._details is not None else self.refresh()
        if details["state"] == "Creating":
            self._wait("created", lambda: self.refresh()["state"] != "Creating", timeout_s, poll_seconds, sleep)
            details = self._details
        if details["state"] == "Failed":
            reason = (details.get("error") or {}).get("message") or "no reason given"
            raise ComputeTargetFailed(f"compute target {self.name!r} could not be created: {reason}",
                                      details=details)
        return details

    @classmethod
    def list(cls, workspace: "Workspace") -> list["ComputeTarget"]:
        """Every target of the workspace, `local` first."""
        reply = workspace.client.get(api_path("workspaces", workspace.name, "computes"))
        return [cls(workspace, c["name"], details=c) for c in reply["computes"]]

    @property
    def details(self) -> dict:
        """What the service last said about the target (fetched now if nothing was read yet)."""
        return self._details if self._details is not None else self.refresh()

    def refresh(self) -> dict:
        self._details = self.workspace.client.get(self._path())
        return self._details

    def get_details(self) -> dict:
        """The target as the service sees it, with `active_runs`."""
        if self._details is None or "active_runs" not in self._details:
            return self.refresh()
        return self._details

    @property
    def type(self) -> str:
        return self.get_details()["type"]

    @property
    def settings(self) -> dict:
        return self.get_details()["settings"]

    @property
    def state(self) -> str:
        """Creating, Succeeded, Failed or Deleting (read fresh each time: it changes; reading it also takes a
        creation under way a step further)."""
        return self.refresh()["state"]

    @property
    def active_runs(self) -> int:
        """How many of its runs have not ended (read fresh each time)."""
        return self.refresh()["active_runs"]

    def delete(self, wait: bool = True, timeout_s: float = CREATE_TIMEOUT_S, poll_seconds: float = POLL_SECONDS, *,
               sleep: Callable[[float], None] = time.sleep) -> bool:
        """Deletes the target (and the Batch resources the service created for it, also while it is still
        being created); ConflictError while runs on it have not ended. Batch takes minutes to take a
        cluster down: with `wait` this returns once the target is gone (ComputeTargetTimeout after
        `timeout_s`); without, True if it is gone already, False while it is still `Deleting`."""
        reply = self.workspace.client.request("DELETE", self._path())
        if (reply or {}).get("deleted", True) or not wait:
            return bool((reply or {}).get("deleted", True))
        def gone() -> bool:
            try:
                self.refresh()
            except NotFoundError:
                return True
            return False

        self._wait("deleted", gone, timeout_s, poll_seconds, sleep)
        return True

    def _wait(self, doing: str, done: Callable[[], bool], timeout_s: float, poll_seconds: float,
              sleep: Callable[[float], None]) -> None:
        """Polls `done` (each read of the target also takes the service's work on it a step further) until
        it holds; ComputeTargetTimeout after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() >= deadline:
                raise ComputeTargetTimeout(f"compute target {self.name!r} is still being {doing} after "
                                           f"{timeout_s:g} s; see `nimbus compute show {self.name}`")
            sleep(poll_seconds)
            if done():
                return

    def _path(self) -> str:
        return api_path("workspaces", self.workspace.name, "computes", self.name)

    def __repr__(self) -> str:
        return f"ComputeTarget(workspace={self.workspace.name!r}, name={self.name!r})"
