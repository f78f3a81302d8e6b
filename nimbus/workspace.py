"""Workspace: the top-level container of experiments, runs and their members (Experiment.list lists its experiments)."""
from __future__ import annotations

from nimbus.client import ApiClient, api_path
from nimbus.config import resolve
from nimbus.dataset import Dataset, FileDataset, TabularDataset
from nimbus.datastore import Datastore
from nimbus.exceptions import ConflictError
from nimbus.keyvault import Keyvault
from nimbus.tokens import create_token


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

    # --- datastores (nimbus/datastore.py) ---------------------------------------------------------
    @property
    def datastores(self) -> dict[str, "Datastore"]:
        """Every datastore of the workspace, by name."""
        return {datastore.name: datastore for datastore in Datastore.list(self)}

    @property
    def datasets(self) -> dict[str, "FileDataset | TabularDataset"]:
        """Every dataset's latest version, by name."""
        return {dataset.name: dataset for dataset in Dataset.list(self)}

    def get_default_datastore(self) -> "Datastore":
        return Datastore.get_default(self)

    def set_default_datastore(self, name: str) -> "Datastore":
        return Datastore(self, name).set_as_default()

    def whoami(self) -> dict:
        return self.client.get("/v1/whoami")

    # --- tokens and the audit log -----------------------------------------------------------------
    def create_token(self, name: str = "default", *, role: str | None = None,
                     expires_in: int | str | None = None, user: str | None = None) -> dict:
        """A token scoped to this workspace: `role` caps what it may do here (a CI token that submits runs
        and reads: role="contributor"), `expires_in` is seconds or a duration such as "30d"; it works on
        no other workspace and on no user-level route. The answer's `token` is its secret, shown once.
        `user`: whose token (default: yours; another user's needs an admin)."""
        owner = user or self.whoami()["user"]
        return create_token(self.client, owner, name, expires_in=expires_in, workspace=self.name, role=role)

    def audit_log(self, action: str | None = None, limit: int | None = None) -> list[dict]:
        """The workspace's audit log, newest first (owners and admins): who changed what, when, and through
        which token. `action` keeps one kind (e.g. "member.added"); `limit` stops after that many."""
        params = {"action": action} if action else {}
        found: list[dict] = []
        for entry in self.client.paged(api_path("workspaces", self.name, "audit"), "entries", params):
            found.append(entry)
            if limit is not None and len(found) >= limit:
                break
        return found

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r}, url={self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and (self.name, self.url) == (other.name, other.url)

    def __hash__(self) -> int:
        return hash((self.name, self.url))
