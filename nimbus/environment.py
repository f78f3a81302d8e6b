"""Environment: a versioned definition of what a run's script needs, with the names of Azure ML v1's.

    env = Environment.from_pip_requirements("sklearn", "requirements.txt")
    env.environment_variables["OMP_NUM_THREADS"] = "1"
    env = env.register(ws)                                   # sklearn:1 (the same definition again: sklearn:1)
    ScriptRunConfig(source_directory=".", script="train.py", environment=env)

Each version is built once per definition (a virtualenv on the local platform, an image on AWS).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from nimbus.client import api_path
from nimbus.exceptions import InvalidError

if TYPE_CHECKING:
    from nimbus.workspace import Workspace


class Environment:
    def __init__(self, name: str):
        if not isinstance(name, str) or not name or ":" in name:
            raise InvalidError(f"environment name {name!r} must be a non-empty name without ':'", field="name")
        self.name = name
        self.version: int | None = None  # set once registered or fetched
        self.python_version: str | None = None  # major.minor; None: the service's default
        self.pip_packages: list[str] = []  # requirement lines, or pip options such as "--find-links /wheels"
        self.environment_variables: dict[str, str] = {}
        self.base_image: str | None = None  # the image built on AWS; None: python:<python_version>-slim
        self.hash: str | None = None
        self.used = False
        self.builds: list[dict] = []
        self.details: dict = {}  # the service's reply

    @property
    def id(self) -> str | None:
        return None if self.version is None else f"{self.name}:{self.version}"

    @classmethod
    def from_pip_requirements(cls, name: str, file_path: str | os.PathLike) -> "Environment":
        """An environment whose pip packages are a requirements file's lines (comments and blank lines skipped)."""
        environment = cls(name)
        environment.pip_packages = read_requirements(file_path)
        return environment

    @classmethod
    def from_yaml(cls, name: str, file_path: str | os.PathLike) -> "Environment":
        """From a YAML file of `python`, `pip`, `variables` and `base_image`; a conda-style file's
        `dependencies` (`python=3.11` and a `pip:` list) is read too."""
        path = Path(file_path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise InvalidError(f"{str(path)!r} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise InvalidError(f"{str(path)!r} must hold a mapping")
        environment = cls(name)
        python, pip = data.get("python"), list(data.get("pip") or [])
        for dependency in data.get("dependencies") or []:
            if isinstance(dependency, str) and dependency.replace(" ", "").startswith("python="):
                python = dependency.split("=", 1)[1].strip()
            elif isinstance(dependency, dict) and "pip" in dependency:
                pip += list(dependency["pip"] or [])
        environment.python_version = None if python is None else ".".join(str(python).split(".")[:2])
        environment.pip_packages = [str(line) for line in pip]
        environment.environment_variables = {str(k): str(v) for k, v in (data.get("variables") or {}).items()}
        environment.base_image = data.get("base_image")
        return environment

    def definition(self) -> dict:
        """What the service stores (None fields take the service's defaults)."""
        return {"python": self.python_version, "pip": list(self.pip_packages),
                "variables": dict(self.environment_variables), "base_image": self.base_image}

    # --- the service --------------------------------------------------------------------------------
    def register(self, workspace: "Workspace") -> "Environment":
        """The next version with this definition, or the latest one when its definition is the same."""
        body = {k: v for k, v in self.definition().items() if v is not None}
        reply = workspace.client.post(_path(workspace, self.name, "versions"), body)
        return Environment._from_details(reply)

    @classmethod
    def get(cls, workspace: "Workspace", name: str, version: int | str | None = None) -> "Environment":
        return cls._from_details(workspace.client.get(_path(workspace, name, "versions",
                                                            "latest" if version is None else version)))

    @classmethod
    def list(cls, workspace: "Workspace") -> dict[str, "Environment"]:
        """Every environment's latest version, by name."""
        reply = workspace.client.get(_path(workspace))
        return {item["name"]: cls._from_details(item) for item in reply["environments"]}

    @classmethod
    def _from_details(cls, details: Mapping[str, Any]) -> "Environment":
        environment = cls(details["name"])
        environment.details = dict(details)
        definition = details["definition"]
        environment.version, environment.hash = int(details["version"]), details["hash"]
        environment.python_version, environment.base_image = definition["python"], definition["base_image"]
        environment.pip_packages = list(definition["pip"])
        environment.environment_variables = dict(definition["variables"])
        environment.used, environment.builds = bool(details.get("used")), list(details.get("builds") or [])
        return environment

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version!r})"


def read_requirements(file_path: str | os.PathLike) -> list[str]:
    lines = []
    for raw in Path(file_path).read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()  # pip's own comment rule: '#' at the start or after a space
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def reference(environment: Any) -> Any:
    """What ScriptRunConfig keeps: 'name:version' for a registered Environment; anything else as given."""
    if not isinstance(environment, Environment):
        return environment
    if environment.version is None:
        raise InvalidError(f"environment {environment.name!r} is not registered: use env.register(workspace) first",
                           field="environment")
    return environment.id


def _path(workspace: "Workspace", *more: Any) -> str:
    return api_path("workspaces", workspace.name, "environments", *(str(m) for m in more))
