"""Model: a registered, versioned model, with the names of Azure ML v1's `Model`.

    model = Model.register(ws, "iris", "outputs/model.pkl", tags={"stage": "dev"})
    Model(ws, "iris", version="prod").download("here")

Scoring functions run `from nimbus import Model` to call `Model.get_model_path` with only the standard
library installed, so this module imports the HTTP client (and everything built on it) inside methods.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from nimbus.exceptions import InvalidError
from nimbus.model_path import get_model_path as _get_model_path
from nimbus.progress import ProgressBar, wanted
from nimbus.transfers import parallel

if TYPE_CHECKING:
    from nimbus.workspace import Workspace

_FIELDS = ("name", "version", "id", "asset_path", "files", "total_bytes", "description", "framework",
           "framework_version", "tags", "properties", "aliases", "lineage", "deployments", "created", "created_by")


class Model:
    """One version of a registered model. `version` may be a number, an alias or None (the latest)."""

    def __init__(self, workspace: "Workspace", name: str, version: int | str | None = None, *,
                 details: dict | None = None):
        self.workspace = workspace
        if details is None:
            details = workspace.client.get(_path(workspace, name, "versions", "latest" if version is None else version))
        self._set(details)

    # --- what it is ---------------------------------------------------------------------------------
    name: str
    version: int
    id: str
    asset_path: str
    files: list[dict]
    total_bytes: int
    description: str
    framework: str | None
    framework_version: str | None
    tags: dict[str, str]
    properties: dict[str, str]
    aliases: list[str]
    lineage: dict
    deployments: list[str]
    created: str
    created_by: str

    @property
    def run_id(self) -> str | None:
        """The run whose files were registered, if they came from one."""
        return self.lineage.get("run_id")

    @property
    def details(self) -> dict:
        return {field: getattr(self, field) for field in _FIELDS}

    def get_details(self) -> dict:
        """Asks the service again and returns the version's details."""
        self._set(self.workspace.client.get(self._version_path()))
        return self.details

    # --- registering and finding --------------------------------------------------------------------
    @classmethod
    def register(cls, workspace: "Workspace", model_name: str, model_path: str | os.PathLike,
                 tags: Mapping[str, Any] | None = None, properties: Mapping[str, Any] | None = None,
                 description: str | None = None, model_framework: str | None = None,
                 model_framework_version: str | None = None, show_progress: bool | None = True) -> "Model":
        """Uploads a local file or folder straight to storage and registers it as the next version."""
        files = _local_files(model_path)
        client = workspace.client
        reply = client.post(_path(workspace, model_name, "uploads"),
                            {"files": [{"path": rel, "size": size} for rel, _, size in files]}, retry=True)
        urls = {item["path"]: item["url"] for item in reply["files"]}
        with ProgressBar(sum(size for _, _, size in files), model_name, enabled=wanted(show_progress)) as bar:
            parallel(lambda f: client.upload(urls[f[0]], f[1], bar.update), files)
        body = {"upload_id": reply["upload_id"], "tags": _strings(tags), "properties": _strings(properties),
                "description": description, "framework": model_framework,
                "framework_version": model_framework_version}
        # Retried: the service registers an upload once and answers a repeat with the same version.
        details = client.post(_path(workspace, model_name, "versions"), {k: v for k, v in body.items() if v is not None},
                              retry=True)
        return cls(workspace, model_name, details=details)

    @classmethod
    def list(cls, workspace: "Workspace", name: str | None = None,
             tags: Mapping[str, Any] | Iterable[str | Sequence[str]] | None = None, latest: bool = True) -> list["Model"]:
        """Registered models: the latest version of each unless `latest=False`, filtered by name and tags.

        tags: {key: value or None}, or a list of "key", "key=value" or [key, value] entries; all must match.
        """
        params = {"name": name, "tag": _tag_filters(tags), "all_versions": None if latest else "true",
                  "max_results": 1000}
        items = workspace.client.paged(_path(workspace), "models",
                                       {k: v for k, v in params.items() if v not in (None, [])})
        return [cls(workspace, item["name"], details=item) for item in items]

    # --- files --------------------------------------------------------------------------------------
    def download(self, target_dir: str | os.PathLike = ".", exist_ok: bool = False, zip: bool = False,
                 show_progress: bool | None = None) -> str:
        """Writes the version's files under target_dir and returns the path of its asset (file or folder);
        with zip=True writes one `<name>-<version>.zip` there instead and returns its path."""
        from nimbus.snapshot import safe_target  # here: a scoring function imports this module with only the standard library

        client = self.workspace.client
        files = client.get(self._version_path("files"))["files"]
        directory = Path(target_dir)
        directory.mkdir(parents=True, exist_ok=True)
        with ProgressBar(sum(f["size"] for f in files), self.id, enabled=wanted(show_progress)) as bar:
            if zip:
                return self._download_zip(files, directory / f"{self.name}-{self.version}.zip", exist_ok, bar.update)
            targets = [safe_target(directory, f["path"]) for f in files]
            existing = [str(t) for t in targets if t.exists()]
            if existing and not exist_ok:
                raise FileExistsError(f"{existing[0]} already exists; pass exist_ok=True to overwrite")
            parallel(lambda job: client.download(job[0]["url"], job[1], bar.update), list(_pairs(files, targets)))
        return str(directory / self.asset_path) if self.asset_path != "." else str(directory)

    def _download_zip(self, files: list[dict], target: Path, exist_ok: bool, progress) -> str:
        if target.exists() and not exist_ok:
            raise FileExistsError(f"{target} already exists; pass exist_ok=True to overwrite")
        return self.workspace.client.download_zip([(f["path"], f["size"], f["url"]) for f in files], target,
                                                  progress)

    @staticmethod
    def get_model_path(model_name: str, version: int | str | None = None) -> str:
        """Inside a deployment or batch-scoring job: the local path of a model's file or folder."""
        return _get_model_path(model_name, version)

    # --- changing -----------------------------------------------------------------------------------
    def add_tags(self, tags: Mapping[str, Any]) -> None:
        self._patch({"tags": _strings(tags)})

    def remove_tags(self, tags: Iterable[str]) -> None:
        self._patch({"remove_tags": [str(k) for k in ([tags] if isinstance(tags, str) else tags)]})

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Properties are write-once: setting one to another value raises ConflictError."""
        self._patch({"properties": _strings(properties)})

    def update(self, description: str | None = None, tags: Mapping[str, Any] | None = None) -> None:
        self._patch({k: v for k, v in {"description": description, "tags": _strings(tags) if tags else None}.items()
                     if v is not None})

    def set_alias(self, alias: str) -> dict:
        """Points `alias` (e.g. "prod") at this version, moving it from wherever it pointed."""
        moved = self.workspace.client.request("PUT", _path(self.workspace, self.name, "aliases", alias),
                                              json={"version": self.version})
        self.get_details()
        return moved

    @classmethod
    def get_aliases(cls, workspace: "Workspace", name: str) -> dict:
        """{"aliases": {alias: version}, "history": [{"alias", "from", "to", "by", "at"}]} of a model."""
        return workspace.client.get(_path(workspace, name, "aliases"))

    @classmethod
    def delete_alias(cls, workspace: "Workspace", name: str, alias: str) -> dict:
        return workspace.client.request("DELETE", _path(workspace, name, "aliases", alias))

    def delete(self) -> None:
        """Deletes this version and its files; refused (ConflictError) while a deployment uses it."""
        self.workspace.client.request("DELETE", self._version_path())

    @staticmethod
    def deploy(workspace: "Workspace", name: str, models: Sequence["Model"], inference_config: Any = None,
               deployment_config: Any = None, endpoint: str | None = None, overwrite: bool = True, *,
               wait: bool = True) -> Any:
        """Deploys models as a scoring function (see nimbus.webservice.deploy): waits until it is Succeeded
        (raising if it Failed), unless `wait=False`."""
        from nimbus.webservice import deploy  # here: a scoring function imports this module with only the standard library

        return deploy(workspace, name, models, inference_config, deployment_config, endpoint=endpoint, wait=wait)

    # --- internals ----------------------------------------------------------------------------------
    def _patch(self, body: dict) -> None:
        self._set(self.workspace.client.request("PATCH", self._version_path(), json=body))

    def _set(self, details: dict) -> None:
        for field in _FIELDS:
            setattr(self, field, details.get(field))
        self.tags, self.properties = self.tags or {}, self.properties or {}
        self.lineage, self.aliases = self.lineage or {}, self.aliases or []

    def _version_path(self, *more: str) -> str:
        return _path(self.workspace, self.name, "versions", str(self.version), *more)

    def __repr__(self) -> str:
        return f"Model(workspace={self.workspace.name!r}, name={self.name!r}, version={self.version!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (self.workspace, self.id) == (other.workspace, other.id)

    def __hash__(self) -> int:
        return hash(self.id)


def _path(workspace: "Workspace", *segments: Any) -> str:
    from nimbus.client import api_path  # here: a scoring function imports this module with only the standard library

    return api_path("workspaces", workspace.name, "models", *(str(s) for s in segments))


def _local_files(model_path: str | os.PathLike) -> list[tuple[str, str, int]]:
    """(registered path, local path, size): a file under its own name, a folder's files under the folder's name."""
    root = Path(model_path)
    if root.is_file():
        return [(root.name, str(root), root.stat().st_size)]
    if not root.is_dir():
        raise InvalidError(f"{str(root)!r} is neither a file nor a folder", field="model_path")
    folder = root.resolve().name
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise InvalidError(f"{str(root)!r} holds no files", field="model_path")
    return [(f"{folder}/{p.relative_to(root).as_posix()}", str(p), p.stat().st_size) for p in files]


def _pairs(files: list[dict], targets: list[Path]) -> Iterable[tuple[dict, Path]]:
    return zip(files, targets)


def _strings(entries: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else str(v) for k, v in (entries or {}).items()}


def _tag_filters(tags: Mapping[str, Any] | Iterable[str | Sequence[str]] | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, Mapping):
        return [str(k) if v is None else f"{k}={v}" for k, v in tags.items()]
    if isinstance(tags, str):
        return [tags]
    return [entry if isinstance(entry, str) else "=".join(str(part) for part in entry) for entry in tags]


