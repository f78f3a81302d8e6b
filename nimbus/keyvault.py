"""Keyvault: a workspace's secrets, as Azure ML v1's `ws.get_default_keyvault()` offers them.

    kv = ws.get_default_keyvault()
    kv.set_secret("db-password", value)     # contributors; the value is never shown again
    kv.list_secrets()                        # [{"name": "db-password", "created": …, …}]
    kv.delete_secret("db-password")

Reading a value back is a run's privilege: inside a submitted script, `Run.get_context().get_secret(name)`
(or name it in ScriptRunConfig.secret_variables). No person's token reads a value, so get_secret here
refuses at once rather than asking the service to refuse.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from nimbus.client import api_path
from nimbus.exceptions import ForbiddenError, InvalidError

SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,126}")  # the service's rule (Azure Key Vault's)
SECRET_RULE = "1-127 characters: letters, digits and '-', starting with a letter or digit"


def check_secret_name(name: object) -> str:
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        raise InvalidError(f"secret name {name!r} is invalid: {SECRET_RULE}", field="name")
    return name


class Keyvault:
    def __init__(self, workspace):
        self.workspace = workspace

    def set_secret(self, name: str, value: str) -> dict:
        """Creates the secret or replaces its value; returns what is known of it (never the value)."""
        check_secret_name(name)
        if not isinstance(value, str) or not value:
            raise InvalidError(f"secret {name!r} needs a non-empty string value", field="value")
        return self.workspace.client.request("PUT", self._path(name), json={"value": value})

    def set_secrets(self, secrets_batch: Mapping[str, str]) -> None:
        for name, value in secrets_batch.items():
            self.set_secret(name, value)

    def list_secrets(self) -> list[dict]:
        """Every secret's name, with when and by whom it was created and last set."""
        return self.workspace.client.get(api_path("workspaces", self.workspace.name, "secrets"))["secrets"]

    def delete_secret(self, name: str) -> None:
        self.workspace.client.request("DELETE", self._path(check_secret_name(name)))

    def delete_secrets(self, secrets: Iterable[str]) -> None:
        for name in secrets:
            self.delete_secret(name)

    def get_secret(self, name: str) -> str:
        raise ForbiddenError(f"secret {name!r}: values are given only to runs; inside a submitted script use "
                             "Run.get_context().get_secret(name), or name it in ScriptRunConfig.secret_variables")

    def get_secrets(self, secrets: Iterable[str]) -> dict[str, str]:
        return {name: self.get_secret(name) for name in secrets}

    def _path(self, name: str) -> str:
        return api_path("workspaces", self.workspace.name, "secrets", name)

    def __repr__(self) -> str:
        return f"Keyvault(workspace={self.workspace.name!r})"
