"""Nimbus: track machine-learning experiments with the concepts of Azure Machine Learning v1.

    from nimbus import Workspace, Experiment

    ws = Workspace()                      # from NIMBUS_URL/NIMBUS_TOKEN, `nimbus login` or `nimbus up`
    with Experiment(ws, "mnist").start_logging() as run:
        run.log("accuracy", 0.93)
"""
import importlib

from nimbus.exceptions import (
    AuthenticationError, ConfigurationError, ConflictError, ForbiddenError, InternalServerError, InvalidError,
    NimbusError, NotFoundError, ServiceUnavailableError, TooLargeError,
)
from nimbus.version import __version__

# These pull in the HTTP client (requests, urllib3) or yaml, so they load on first use (PEP 562): a
# scoring function runs `from nimbus import Model` where only the standard library may be installed.
_LAZY = {"Workspace": "nimbus.workspace", "Experiment": "nimbus.experiment", "Run": "nimbus.experiment",
         "ScriptRunConfig": "nimbus.runconfig", "Model": "nimbus.model", "ComputeTarget": "nimbus.compute_target",
         "Environment": "nimbus.environment", "Datastore": "nimbus.datastore",
         "Dataset": "nimbus.dataset"}

__all__ = [
    "Workspace", "Experiment", "Run", "ScriptRunConfig", "Model", "ComputeTarget", "Environment", "Datastore", "Dataset",
    "NimbusError", "ConfigurationError", "InvalidError", "AuthenticationError", "ForbiddenError", "NotFoundError",
    "ConflictError", "TooLargeError", "ServiceUnavailableError", "InternalServerError", "__version__",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nimbus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
