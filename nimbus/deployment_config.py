"""What a deployment is made of and how it runs: InferenceConfig and DeploymentConfig, checked field by field."""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nimbus.environment import Environment, reference
from nimbus.exceptions import InvalidError

NAME_RULE = re.compile(r"[a-z][a-z0-9-]{1,31}")  # endpoints and deployments alike
MEMORY_MB = (128, 10240)  # AWS Lambda's range
TIMEOUT_S = (1, 900)
CONCURRENCY = (0, 1000)  # the service's bounds
INSTANCES = (1, 1000)


def invalid(field: str, message: str) -> InvalidError:
    return InvalidError(f"{field} {message}", field=field)


def whole_number(value: Any, field: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise invalid(field, f"must be a whole number {span}, not {value!r}")
    return value


def check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_RULE.fullmatch(value):
        raise invalid(field, f"must be 2-32 characters: a lowercase letter, then lowercase letters, digits or "
                              f"'-', not {value!r}")
    return value


class InferenceConfig:
    """The entry script (with init() and run(raw_data)) and the folder it is deployed from.

    Without source_directory the entry script's own folder is deployed; otherwise entry_script is
    relative to source_directory. Either way the script must be a file inside the folder.
    """

    def __init__(self, entry_script: str | os.PathLike, source_directory: str | os.PathLike | None = None,
                 environment: "str | Environment | None" = None):
        if not isinstance(entry_script, (str, os.PathLike)) or not os.fspath(entry_script):
            raise invalid("entry_script", "must be a file path")
        if source_directory is None:
            script = Path(entry_script)
            source_directory, entry_script = script.parent, script.name
        elif not isinstance(source_directory, (str, os.PathLike)) or not os.fspath(source_directory):
            raise invalid("source_directory", "must be a folder path")
        environment = reference(environment)  # a registered Environment as 'name:version'
        if environment is not None and (not isinstance(environment, str) or not 0 < len(environment) <= 255):
            raise invalid("environment", "must be a registered Environment, 'name[:version]' or None")
        self.source_directory = os.fspath(source_directory)
        self.entry_script = os.fspath(entry_script)
        self.environment = environment
        self.validate()

    def validate(self) -> None:
        """Checks that the folder exists and holds the script; makes entry_script a relative POSIX path."""
        root = Path(self.source_directory)
        if not root.is_dir():
            raise invalid("source_directory", f"{self.source_directory!r} is not a folder")
        script = Path(self.entry_script)
        script = script if script.is_absolute() else root / script
        resolved, root_resolved = script.resolve(), root.resolve()
        if not resolved.is_relative_to(root_resolved):
            raise invalid("entry_script", f"{self.entry_script!r} is outside the source folder "
                                           f"{self.source_directory!r}")
        if not resolved.is_file():
            raise invalid("entry_script", f"{self.entry_script!r} is not a file in {self.source_directory!r}")
        # The script's name inside the snapshot: as written (a link keeps its own name), never resolved.
        relative = os.path.relpath(os.path.abspath(script), os.path.abspath(root))
        self.entry_script = PurePosixPath(*Path(relative).parts).as_posix()

    def __repr__(self) -> str:
        return (f"InferenceConfig(entry_script={self.entry_script!r}, source_directory={self.source_directory!r}, "
                f"environment={self.environment!r})")


@dataclass
class DeploymentConfig:
    """How a deployment runs: memory, time limit per request, concurrency, instances, request capture."""

    memory_mb: int = 1024
    timeout_s: int = 60
    reserved_concurrency: int | None = None
    provisioned_concurrency: int | None = None
    min_instances: int = 0
    max_instances: int | None = None
    capture_rate: float = 0.0  # share of requests (0-1) whose body and answer are kept

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks every field; raises InvalidError naming the field."""
        whole_number(self.memory_mb, "memory_mb", *MEMORY_MB)
        whole_number(self.timeout_s, "timeout_s", *TIMEOUT_S)
        if self.reserved_concurrency is not None:
            whole_number(self.reserved_concurrency, "reserved_concurrency", *CONCURRENCY)
        if self.provisioned_concurrency is not None:
            whole_number(self.provisioned_concurrency, "provisioned_concurrency", 1, CONCURRENCY[1])
            if self.reserved_concurrency is not None and self.provisioned_concurrency > self.reserved_concurrency:
                raise invalid("provisioned_concurrency", f"({self.provisioned_concurrency}) cannot exceed "
                                                          f"reserved_concurrency ({self.reserved_concurrency})")
        whole_number(self.min_instances, "min_instances", 0, INSTANCES[1])
        if self.max_instances is not None:
            whole_number(self.max_instances, "max_instances", *INSTANCES)
        if self.max_instances is not None and self.max_instances < self.min_instances:
            raise invalid("max_instances", f"({self.max_instances}) cannot be below min_instances "
                                            f"({self.min_instances})")
        rate = self.capture_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise invalid("capture_rate", f"must be a number from 0 to 1, not {rate!r}")
        self.capture_rate = float(rate)

    def to_dict(self) -> dict:
        """The `config` of a deployment, as the service takes it."""
        self.validate()
        return asdict(self)
