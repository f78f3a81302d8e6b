"""The Secrets port: small named strings (endpoint keys, datastore credentials) kept encrypted at rest.

Secrets Manager in the cloud, Fernet-encrypted files locally. Values never appear in logs or errors:
messages name the secret, never its value.
"""
from __future__ import annotations

import abc
import re

from chalicelib.errors import Invalid

NAME_PATTERN = re.compile(r"[A-Za-z0-9/_.-]{1,256}")
MAX_VALUE_BYTES = 65536  # Secrets Manager's ceiling for SecretString; applied locally too


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise Invalid(f"invalid secret name {name!r}: 1-256 characters of A-Z a-z 0-9 / _ . -", field="name")
    return name


def check_value(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"secret {name!r} must be a string", field="value")
    if not value:
        raise Invalid(f"secret {name!r} must not be empty", field="value")  # Secrets Manager refuses ""
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise Invalid(f"secret {name!r} is larger than {MAX_VALUE_BYTES} bytes", field="value")
    return value


class Secrets(abc.ABC):
    """Each backend implements three primitives; names and values are checked here, once."""

    def put(self, name: str, value: str) -> None:
        """Create the secret or replace its value."""
        self._put(check_name(name), check_value(name, value))

    def get(self, name: str) -> str:
        """Raises NotFound."""
        return self._get(check_name(name))

    def delete(self, name: str) -> None:
        """Idempotent: deleting a missing secret is not an error."""
        self._delete(check_name(name))

    @abc.abstractmethod
    def _put(self, name: str, value: str) -> None: ...

    @abc.abstractmethod
    def _get(self, name: str) -> str: ...

    @abc.abstractmethod
    def _delete(self, name: str) -> None: ...
