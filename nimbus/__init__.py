"""Nimbus: track machine-learning experiments with the concepts of Azure Machine Learning v1.

    from nimbus import Workspace, Experiment

    ws = Workspace()                      # from NIMBUS_URL/NIMBUS_TOKEN, `nimbus login` or `nimbus up`
    with Experiment(ws, "mnist").start_logging() as run:
        run.log("accuracy", 0.93)
"""
from nimbus.exceptions import (
    AuthenticationError, ConfigurationError, ConflictError, ForbiddenError, InvalidError, NimbusError, NotFoundError,
    ServiceUnavailableError, TooLargeError,
)
from nimbus.experiment import Experiment
from nimbus.run import Run
from nimbus.runconfig import ScriptRunConfig
from nimbus.version import __version__
from nimbus.workspace import Workspace

__all__ = [
    "Workspace", "Experiment", "Run", "ScriptRunConfig", "NimbusError", "ConfigurationError", "InvalidError",
    "AuthenticationError", "ForbiddenError", "NotFoundError", "ConflictError", "TooLargeError",
    "ServiceUnavailableError", "__version__",
]
