"""ComputeTarget: where submitted runs execute — `local`, an AWS Batch cluster, or an instance running an agent.

    from nimbus import ComputeTarget, Workspace

    ws = Workspace()
    box = ComputeTarget.create(ws, "gpu-box", "instance", {"max_concurrent_runs": 2})
    # on the machine: nimbus agent --compute gpu-box
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from nimbus.client import api_path

if TYPE_CHECKING:
    from nimbus.workspace import Workspace


class ComputeTarget:
    """A compute target of a workspace; its details are fetched on first use (`refresh()` reads them again)."""

    def __init__(self, workspace: "Workspace", name: str, *, details: dict | None = None):
        self.workspace = workspace
        self.name = name
        self._details = details

    @classmethod
    def create(cls, workspace: "Workspace", name: str, type: str, settings: Mapping[str, Any] | None = None) -> \
            "ComputeTarget":
        """Registers a target: `batch` (the service creates or attaches an AWS Batch queue, and answers once
        it exists) or `instance`. Raises InvalidError naming a bad setting, ConflictError if the name is taken."""
        details = workspace.client.post(api_path("workspaces", workspace.name, "computes"),
                                        {"name": name, "type": type, "settings": dict(settings or {})})
        return cls(workspace, name, details=details)

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
        """Creating, Succeeded, Failed or Deleting (read fresh each time: it changes)."""
        return self.refresh()["state"]

    @property
    def active_runs(self) -> int:
        """How many of its runs have not ended (read fresh each time)."""
        return self.refresh()["active_runs"]

    def delete(self) -> None:
        """Deletes the target (and the Batch resources the service created for it); ConflictError while
        runs on it have not ended."""
        self.workspace.client.request("DELETE", self._path())

    def _path(self) -> str:
        return api_path("workspaces", self.workspace.name, "computes", self.name)

    def __repr__(self) -> str:
        return f"ComputeTarget(workspace={self.workspace.name!r}, name={self.name!r})"
