"""Where a model's files are inside a scoring function or batch-scoring job.

The runtime puts each model version under `$NIMBUS_MODEL_DIR/<name>/<version>/` and lists them in
`$NIMBUS_MODEL_DIR/models.json` as {name: {version: asset_path}}. This module runs inside scoring
functions, so it imports the standard library only.
"""
from __future__ import annotations

import json
import os

from nimbus.exceptions import ConfigurationError, NotFoundError

MODEL_DIR_ENV = "NIMBUS_MODEL_DIR"
INDEX = "models.json"


class ModelNotFoundError(NotFoundError):
    """The model, or the version asked for, is not among the models this process was given."""


def get_model_path(name: str, version: int | str | None = None) -> str:
    """The path of `name`'s registered file or folder; no version: the highest version present."""
    index = _index()
    versions = index.get(name)
    if not isinstance(versions, dict) or not versions:
        present = ", ".join(sorted(index)) or "none"
        raise ModelNotFoundError(f"model {name!r} is not among the models here (present: {present})")
    if version is None:
        chosen = max(versions, key=_number)
    else:
        chosen = str(version)
        if chosen not in versions:
            present = ", ".join(sorted(versions, key=_number))
            raise ModelNotFoundError(f"model {name!r} has no version {chosen} here (present: {present})")
    root = os.environ[MODEL_DIR_ENV]
    return os.path.normpath(os.path.join(root, name, chosen, versions[chosen]))


def _index() -> dict:
    root = os.environ.get(MODEL_DIR_ENV)
    if not root:
        raise ConfigurationError(f"{MODEL_DIR_ENV} is not set: model paths are known inside a deployment or a "
                                 "batch-scoring job only")
    path = os.path.join(root, INDEX)
    try:
        with open(path, encoding="utf-8") as stream:
            index = json.load(stream)
    except FileNotFoundError:
        raise ConfigurationError(f"{path} does not exist: {MODEL_DIR_ENV} names no model folder") from None
    except ValueError as err:
        raise ConfigurationError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(index, dict):
        raise ConfigurationError(f"{path} must hold an object of {{name: {{version: asset_path}}}}")
    return index


def _number(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)
