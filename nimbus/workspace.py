"""Workspace: the top-level container of experiments, runs and their members (Experiment.list lists its experiments)."""
from __future__ import annotations

from nimbus.client import ApiClient, api_path
from nimbus.config import resolve
from nimbus.exceptions import ConflictError
from nimbus.keyvault import Keyvault


class Workspace:
    """A workspace on a Nimbus service.

    With no arguments the service and workspace come from the environment, the saved profile
    or the local platform (see nimbus.config); nothing is fetched until it is needed.
    """

    def __init__(self, name: str | None = None, url: str | None = None, token: str | None = None, *,
                 client: ApiClient | None = None):
        if client is None:
            config = resolve(url, token, name)
            client, name = ApiClient(config.url, config.token), config.workspace
        self.name: str = name or "default"
        self.client = client

    @property
    def url(self) -> str:
        return self.client.url

    @classmethod
    def get(cls, name: str, url: str | None = None, token: str | None = None) -> "Workspace":
        """The named workspace; raises NotFoundError unless it exists and you are a member."""
        workspace = cls(name, url, token)
        workspace.get_details()
        return workspace

    @classmethod
    def create(cls, name: str, description: str = "", url: str | None = None, token: str | None = None,
               exist_ok: bool = False) -> "Workspace":
        """Creates a workspace (you become its owner). With exist_ok, an existing one is returned instead."""
        workspace = cls(name, url, token)
        try:
            workspace.client.post("/v1/workspaces", {"name": name, "description": description})
        except ConflictError:
            if not exist_ok:
                raise
            workspace.get_details()
        return workspace

    @classmethod
    def list(cls, url: str | None = None, token: str | None = None) -> dict[str, "Workspace"]:
        """Every workspace you are a member of, by name."""
        client = cls(None, url, token).client
        reply = client.get("/v1/workspaces")
        return {w["name"]: cls(w["name"], client=client) for w in reply["workspaces"]}

    def get_details(self) -> dict:
        return self.client.get(api_path("workspaces", self.name))

    def delete(self, force: bool = False) -> dict:
        """Deletes the workspace; `force` also deletes every experiment, run and file in it."""
        return self.client.request("DELETE", api_path("workspaces", self.name),
                                   params={"force": "true"} if force else None)

    # --- members ----------------------------------------------------------------------------------
    def members(self) -> list[dict]:
        return self.client.get(api_path("workspaces", self.name, "members"))["members"]

    def add_member(self, user: str, role: str) -> dict:
        """Adds a user, or changes their role: reader, contributor or owner."""
        return self.client.post(api_path("workspaces", self.name, "members"), {"user": user, "role": role},
                                retry=True)

    def remove_member(self, user: str) -> None:
        self.client.request("DELETE", api_path("workspaces", self.name, "members", user))

    def get_default_keyvault(self) -> Keyvault:
        """The workspace's secrets (nimbus/keyvault.py): set, list and delete them."""
        return Keyvault(self)

    def whoami(self) -> dict:
        return self.client.get("/v1/whoami")

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r}, url={self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and (self.name, self.url) == (other.name, other.url)

    def __hash__(self) -> int:
        return hash((self.name, self.url))
