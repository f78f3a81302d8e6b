"""Datastore: where a workspace's data lives, with the names Azure ML v1 gives it.

    from nimbus import Datastore, Workspace

    ws = Workspace()
    blob = ws.get_default_datastore()                       # `workspaceblobstore`, every workspace's own
    lake = Datastore.register_s3(ws, "lake", bucket_name="research-data", prefix="projects",
                                 access_key_id=..., secret_access_key=...)   # kept in the workspace's secrets
    minio = Datastore.register_s3(ws, "minio", bucket_name="data", endpoint_url="http://127.0.0.1:9000", ...)
    disk = Datastore.register_local(ws, "scratch", "/srv/data/scratch")      # platform admins, under its roots
    lake.set_as_default()
    Datastore.get(ws, "lake").unregister()

Registering checks the connection first (one listing under the prefix): a refused one raises InvalidError
naming the field and the store's error code (`error.details["store_code"]`), and nothing is saved.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nimbus.client import api_path
from nimbus.datastore_files import DatastoreFiles

if TYPE_CHECKING:
    from nimbus.workspace import Workspace

DEFAULT_NAME = "workspaceblobstore"


class Datastore(DatastoreFiles):
    """A registered datastore; its details are fetched on first use (`refresh()` reads them again). Its
    files: upload, upload_files, download, list_files (datastore_files.py)."""

    def __init__(self, workspace: "Workspace", name: str, *, details: dict | None = None):
        self.workspace = workspace
        self.name = name
        self._details = details

    # --- registering ---------------------------------------------------------------------------
    @classmethod
    def register_s3(cls, workspace: "Workspace", datastore_name: str, bucket_name: str, prefix: str | None = None,
                    region: str | None = None, endpoint_url: str | None = None, access_key_id: str | None = None,
                    secret_access_key: str | None = None, description: str = "", overwrite: bool = False) -> \
            "Datastore":
        """A bucket (and a folder in it) on S3 or any S3-compatible store (`endpoint_url`). Without an access
        key pair the platform's (or the job's) AWS role reaches it."""
        settings: dict[str, Any] = {"bucket": bucket_name}
        settings.update({k: v for k, v in (("prefix", prefix), ("region", region), ("endpoint_url", endpoint_url))
                         if v is not None})
        credentials = None
        if access_key_id is not None or secret_access_key is not None:
            credentials = {"access_key_id": access_key_id, "secret_access_key": secret_access_key}
        return cls._register(workspace, {"name": datastore_name, "type": "s3", "settings": settings,
                                         "credentials": credentials, "description": description,
                                         "overwrite": overwrite})

    @classmethod
    def register_local(cls, workspace: "Workspace", datastore_name: str, path: str, description: str = "",
                       overwrite: bool = False) -> "Datastore":
        """A folder on the platform's machine, under a root its operator allows (NIMBUS_DATASTORE_ROOTS):
        platform admins only."""
        return cls._register(workspace, {"name": datastore_name, "type": "local", "settings": {"path": str(path)},
                                         "description": description, "overwrite": overwrite})

    @classmethod
    def _register(cls, workspace: "Workspace", body: dict) -> "Datastore":
        details = workspace.client.post(api_path("workspaces", workspace.name, "datastores"), body)
        return cls(workspace, details["name"], details=details)

    # --- finding -------------------------------------------------------------------------------
    @classmethod
    def get(cls, workspace: "Workspace", datastore_name: str) -> "Datastore":
        """Raises NotFoundError naming the datastore."""
        datastore = cls(workspace, datastore_name)
        datastore.refresh()
        return datastore

    @classmethod
    def get_default(cls, workspace: "Workspace") -> "Datastore":
        details = workspace.client.get(api_path("workspaces", workspace.name, "default-datastore"))
        return cls(workspace, details["name"], details=details)

    @classmethod
    def list(cls, workspace: "Workspace") -> list["Datastore"]:
        """Every datastore of the workspace, `workspaceblobstore` first."""
        reply = workspace.client.get(api_path("workspaces", workspace.name, "datastores"))
        return [cls(workspace, d["name"], details=d) for d in reply["datastores"]]

    # --- changing ------------------------------------------------------------------------------
    def set_as_default(self) -> "Datastore":
        self._details = self.workspace.client.request(
            "PUT", api_path("workspaces", self.workspace.name, "default-datastore"), json={"name": self.name})
        return self

    def update_credentials(self, access_key_id: str | None = None, secret_access_key: str | None = None) -> \
            "Datastore":
        """New access keys (checked against the store before they replace the old ones); none: the role."""
        credentials = None
        if access_key_id is not None or secret_access_key is not None:
            credentials = {"access_key_id": access_key_id, "secret_access_key": secret_access_key}
        self._details = self.workspace.client.request(
            "PUT", self._path("credentials"), json={"credentials": credentials})
        return self

    def unregister(self) -> None:
        """Forgets the datastore and its keys; the data stays where it is."""
        self.workspace.client.request("DELETE", self._path())

    # --- details -------------------------------------------------------------------------------
    def refresh(self) -> dict:
        self._details = self.workspace.client.get(self._path())
        return self._details

    @property
    def details(self) -> dict:
        return self._details if self._details is not None else self.refresh()

    @property
    def datastore_type(self) -> str:
        return self.details["type"]

    @property
    def settings(self) -> dict:
        return dict(self.details["settings"])

    @property
    def bucket_name(self) -> str | None:
        return self.settings.get("bucket")

    @property
    def prefix(self) -> str | None:
        return self.settings.get("prefix")

    @property
    def endpoint_url(self) -> str | None:
        return self.settings.get("endpoint_url")

    @property
    def credential_type(self) -> str:
        """access_key, role, platform or none: which kind is set, never a value."""
        return self.details["credential"]

    @property
    def is_default(self) -> bool:
        return bool(self.details["is_default"])

    def _path(self, *more: str) -> str:
        return api_path("workspaces", self.workspace.name, "datastores", self.name, *more)

    def __repr__(self) -> str:
        return f"Datastore(workspace={self.workspace.name!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Datastore) and (other.workspace, other.name) == (self.workspace, self.name)

    def __hash__(self) -> int:
        return hash((self.workspace, self.name))
