"""ScriptRunConfig: what a submitted run executes, where its files come from and where it runs."""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import yaml

from nimbus.dataset import INPUT_NAME, DatasetConsumptionConfig, OutputFileDatasetConfig
from nimbus.environment import reference
from nimbus.exceptions import InvalidError
from nimbus.keyvault import SECRET_NAME, SECRET_RULE

COMPUTE_NAME = re.compile(r"[a-z][a-z0-9-]{1,31}")  # `local`, or a target registered in the workspace
MAX_NODES = MAX_PROCESSES_PER_NODE = 64
RESOURCE_LIMITS = {"vcpus": (0, 256), "memory_mb": (128, 2_000_000), "gpus": (0, 16)}
MAX_RUN_DURATION_SECONDS = 30 * 24 * 3600  # the service's ceiling
CONFIG_FOLDER = ".nimbus"
CONFIG_SUFFIX = ".runconfig.yml"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_CONFIG_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


@dataclass
class ScriptRunConfig:
    """Give exactly one of `script` (a Python file, relative to source_directory) and `command`.

    Arguments may be strings or numbers; they reach the script as strings.
    """

    source_directory: str | os.PathLike = "."
    script: str | None = None
    command: str | Sequence[str] | None = None
    arguments: Sequence[Any] = ()
    compute_target: str = "local"
    environment: Any = None  # "name[:version]", or a registered nimbus.Environment (kept as "name:version")
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    max_run_duration_seconds: int | None = None
    node_count: int = 1
    process_count_per_node: int = 1
    resources: Mapping[str, Any] | None = None  # {"vcpus", "memory_mb", "gpus"} for one node
    # {"DB_PASSWORD": "db-password"}: variables set from the workspace's secrets when the run starts, masked
    # as *** in its logs. environment_variables are stored and shown in clear: never put a secret there.
    secret_variables: Mapping[str, str] = field(default_factory=dict)
    # Registered datasets the run reads: `dataset.as_named_input("iris").as_download()` here or among the
    # arguments (where it becomes the files' local folder), or {name, dataset, version, mode} mappings.
    inputs: Sequence[Any] = ()
    # Folders the script writes, uploaded to a datastore when it succeeds (and registered as datasets with
    # register_on_complete): OutputFileDatasetConfig here or among the arguments, or {name, datastore, path,
    # register_as} mappings.
    outputs: Sequence[Any] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks every field, normalising script, command and arguments; raises InvalidError naming the field."""
        if not isinstance(self.source_directory, (str, os.PathLike)) or not os.fspath(self.source_directory):
            raise _invalid("source_directory", "must be a folder path")
        self.source_directory = os.fspath(self.source_directory)
        if (self.script is None) == (self.command is None):
            raise _invalid("script", "give exactly one of script and command")
        if self.script is not None:
            self.script = _relative_script(self.script)
        else:
            self.command = _command_text(self.command)
        inputs = [_input(value, index) for index, value in enumerate(_sequence(self.inputs, "inputs"))]
        arguments = _sequence(self.arguments, "arguments")
        for value in arguments:
            if isinstance(value, DatasetConsumptionConfig) and value.name not in {i["name"] for i in inputs}:
                inputs.append(value.to_wire())
        if len({i["name"] for i in inputs}) != len(inputs):
            raise _invalid("inputs", "two inputs share a name")
        self.inputs = inputs
        outputs = [_output(value, index) for index, value in enumerate(_sequence(self.outputs, "outputs"))]
        for value in arguments:
            if isinstance(value, OutputFileDatasetConfig) and value.name not in {o["name"] for o in outputs}:
                outputs.append(value.to_wire())
        if len({o["name"] for o in outputs}) != len(outputs):
            raise _invalid("outputs", "two outputs share a name")
        self.outputs = outputs
        self.arguments = [value.placeholder if isinstance(value, (DatasetConsumptionConfig, OutputFileDatasetConfig))
                          else _argument(value, index) for index, value in enumerate(arguments)]
        if not isinstance(self.compute_target, str) or not COMPUTE_NAME.fullmatch(self.compute_target):
            raise _invalid("compute_target", f"{self.compute_target!r} is not a compute target name: 'local' or a "
                                             "registered target (2-32 lowercase letters, digits and '-')")
        for name, highest in (("node_count", MAX_NODES), ("process_count_per_node", MAX_PROCESSES_PER_NODE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= highest:
                raise _invalid(name, f"must be a whole number from 1 to {highest}, not {value!r}")
        self.resources = _resources(self.resources)
        # A registered Environment becomes 'name:version'.
        self.environment = reference(self.environment)
        if self.environment is not None and (not isinstance(self.environment, str) or not 0 < len(self.environment)
                                             <= 255):
            raise _invalid("environment", "must be a registered Environment, 'name[:version]' (1-255 characters) or None")
        self.environment_variables = _environment_variables(self.environment_variables)
        self.secret_variables = _secret_variables(self.secret_variables, self.environment_variables)
        duration = self.max_run_duration_seconds
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int)
                                     or not 0 < duration <= MAX_RUN_DURATION_SECONDS):
            raise _invalid("max_run_duration_seconds", f"must be a whole number of seconds from 1 to "
                                                       f"{MAX_RUN_DURATION_SECONDS}, not {duration!r}")

    def check_files(self) -> None:
        """At submit time: the source folder exists and, with a script, the script is a file inside it."""
        root = Path(self.source_directory)
        if not root.is_dir():
            raise _invalid("source_directory", f"{self.source_directory!r} is not a folder")
        if self.script is not None:
            script = (root / self.script).resolve()
            if not script.is_relative_to(root.resolve()):
                raise _invalid("script", f"{self.script!r} leads outside the source folder {self.source_directory!r}")
            if not script.is_file():
                raise _invalid("script", f"{self.script!r} is not a file in {self.source_directory!r}")

    def to_dict(self) -> dict:
        """The `run_config` of a submission, as the service takes it (secret_variables only when some are
        named, so a configuration without them reaches a service that predates them)."""
        self.validate()
        wire = {"script": self.script, "command": self.command, "arguments": list(self.arguments),
                "compute": self.compute_target, "environment": self.environment,
                "environment_variables": dict(self.environment_variables),
                "max_run_duration_s": self.max_run_duration_seconds, "node_count": self.node_count,
                "process_count_per_node": self.process_count_per_node, "resources": self.resources}
        if self.secret_variables:
            wire["secret_variables"] = dict(self.secret_variables)
        if self.inputs:
            wire["inputs"] = [dict(i) for i in self.inputs]
        if self.outputs:
            wire["outputs"] = [dict(o) for o in self.outputs]
        return wire

    # --- files -----------------------------------------------------------------------------------------
    def save(self, name: str) -> Path:
        """Writes <source_directory>/.nimbus/<name>.runconfig.yml (the folder is implied by the location)."""
        if not isinstance(name, str) or not _CONFIG_NAME.fullmatch(name):
            raise _invalid("name", f"{name!r} is not a usable configuration name (letters, digits, _ . -)")
        self.validate()
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source_directory"}
        data["arguments"], data["environment_variables"] = list(self.arguments), dict(self.environment_variables)
        data["secret_variables"] = dict(self.secret_variables)
        data["inputs"] = [dict(i) for i in self.inputs]
        data["outputs"] = [dict(o) for o in self.outputs]
        target = Path(self.source_directory) / CONFIG_FOLDER / f"{name}{CONFIG_SUFFIX}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScriptRunConfig":
        """Reads a run configuration file. A relative source_directory in it (default: the folder the file
        belongs to, i.e. the one holding .nimbus/) is taken relative to that folder."""
        file = Path(path)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise InvalidError(f"{str(file)!r} is not valid YAML: {err}") from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise InvalidError(f"{str(file)!r} must hold a mapping of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise InvalidError(f"{str(file)!r} has unknown settings: {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(known))})", field=unknown[0])
        base = file.parent.parent if file.parent.name == CONFIG_FOLDER else file.parent
        source = data.get("source_directory") or "."
        if not isinstance(source, str):
            raise _invalid("source_directory", "must be a folder path")
        data["source_directory"] = os.path.normpath(base / source)
        for key in ("arguments", "environment_variables", "secret_variables", "inputs", "outputs"):
            if data.get(key) is None:
                data.pop(key, None)
        return cls(**data)


def _invalid(name: str, problem: str) -> InvalidError:
    return InvalidError(f"{name}: {problem}", field=name)


def _relative_script(script: Any) -> str:
    if not isinstance(script, (str, os.PathLike)) or not os.fspath(script):
        raise _invalid("script", "must be a path relative to source_directory")
    text = os.fspath(script).replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise _invalid("script", f"{text!r} must be relative to source_directory, not absolute")
    normal = os.path.normpath(text).replace("\\", "/")
    if normal == "." or normal == ".." or normal.startswith("../"):
        raise _invalid("script", f"{text!r} must name a file inside source_directory")
    return PurePosixPath(normal).as_posix()


def _command_text(command: Any) -> str:
    if isinstance(command, (list, tuple)) and command and all(isinstance(part, str) for part in command):
        command = shlex.join(command)
    if not isinstance(command, str) or not command.strip():
        raise _invalid("command", "must be a non-empty command line (a string or a list of strings)")
    return command


def _sequence(value: Any, name: str) -> Sequence:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise _invalid(name, "must be a list")
    return value


def _argument(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise _invalid(f"arguments[{index}]", f"must be a string or a number, not {type(value).__name__}")


def _input(value: Any, index: int) -> dict:
    """An input in its wire form: {name, dataset, version, mode}."""
    if isinstance(value, DatasetConsumptionConfig):
        return value.to_wire()
    if not isinstance(value, Mapping):
        raise _invalid(f"inputs[{index}]", "must be dataset.as_named_input(...) or a mapping of name, dataset, "
                                           "version and mode")
    unknown = set(value) - {"name", "dataset", "version", "mode"}
    if unknown:
        raise _invalid(f"inputs[{index}]", f"unknown key {sorted(unknown)[0]!r}")
    wire = {"name": value.get("name"), "dataset": value.get("dataset"), "version": value.get("version", "latest"),
            "mode": value.get("mode", "download")}
    if not isinstance(wire["name"], str) or not INPUT_NAME.fullmatch(wire["name"]):
        raise _invalid(f"inputs[{index}].name", "must be 1-64 letters, digits and '_', not starting with a digit")
    if not isinstance(wire["dataset"], str) or not wire["dataset"]:
        raise _invalid(f"inputs[{index}].dataset", "must name a registered dataset")
    if wire["mode"] not in DatasetConsumptionConfig.MODES:
        raise _invalid(f"inputs[{index}].mode", f"must be one of {', '.join(DatasetConsumptionConfig.MODES)}")
    return wire


def _output(value: Any, index: int) -> dict:
    """An output in its wire form: {name, datastore, path[, register_as]}."""
    if isinstance(value, OutputFileDatasetConfig):
        return value.to_wire()
    if not isinstance(value, Mapping):
        raise _invalid(f"outputs[{index}]", "must be an OutputFileDatasetConfig or a mapping of name, datastore and path")
    unknown = set(value) - {"name", "datastore", "path", "register_as"}
    if unknown:
        raise _invalid(f"outputs[{index}]", f"unknown key {sorted(unknown)[0]!r}")
    config = OutputFileDatasetConfig(value.get("name"), (value.get("datastore") or "workspaceblobstore",
                                                          value.get("path")))
    if value.get("register_as"):
        config.register_on_complete(value["register_as"])
    return config.to_wire()


def _environment_variables(variables: Any) -> dict[str, str]:
    if variables is None:
        return {}
    if not isinstance(variables, Mapping):
        raise _invalid("environment_variables", "must be a mapping of names to strings")
    for name, value in variables.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise _invalid("environment_variables", f"{name!r} is not a valid variable name "
                                                    f"([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)")
        if not isinstance(value, str):
            raise _invalid(f"environment_variables.{name}", f"must be a string, not {type(value).__name__}")
    return dict(variables)


def _secret_variables(variables: Any, plain: Mapping[str, str]) -> dict[str, str]:
    if variables is None:
        return {}
    if not isinstance(variables, Mapping):
        raise _invalid("secret_variables", "must be a mapping of variable names to secret names")
    for name, secret in variables.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise _invalid("secret_variables", f"{name!r} is not a valid variable name "
                                               f"([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)")
        if name in plain:
            raise _invalid(f"secret_variables.{name}", "is also in environment_variables: give it once")
        if not isinstance(secret, str) or not SECRET_NAME.fullmatch(secret):
            raise _invalid(f"secret_variables.{name}", f"{secret!r} is not a secret name: {SECRET_RULE}")
    return dict(variables)


def _resources(value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - set(RESOURCE_LIMITS):
        raise _invalid("resources", f"must be a mapping of {', '.join(RESOURCE_LIMITS)}, not {value!r}")
    checked = {}
    for name, amount in value.items():
        low, high = RESOURCE_LIMITS[name]
        whole = name != "vcpus"
        if isinstance(amount, bool) or not isinstance(amount, int if whole else (int, float)) \
                or not (low <= amount <= high) or (name == "vcpus" and amount == 0):
            raise _invalid(f"resources.{name}", f"must be a number from {low} to {high}, not {amount!r}")
        checked[name] = amount
    return checked
