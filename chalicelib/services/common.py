"""Small helpers shared by the services: ids, clock, names, opaque page tokens."""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from chalicelib.errors import Invalid
from chalicelib.settings import Settings
from chalicelib.store.blobs import Blobs
from chalicelib.store.table import Table


@dataclass
class Context:
    """What every service works with: the two ports, the settings and a clock (tests can move it)."""

    table: Table
    blobs: Blobs
    settings: Settings
    clock: Callable[[], float] = time.time

    def now(self) -> str:
        return iso(self.clock())


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def new_id(clock: Callable[[], float] = time.time) -> str:
    """Time-ordered and unique: 12 hex digits of milliseconds, then 10 random hex digits."""
    return f"{int(clock() * 1000):012x}{secrets.token_hex(5)}"


def check_name(value: str, pattern: re.Pattern, field: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Invalid(f"{field} {value!r} is invalid: {rule}", field=field)
    return value


WORKSPACE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,31}")
WORKSPACE_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter or digit"
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
EXPERIMENT_RULE = "1-255 characters: letters, digits, '_', '.' and '-', starting with a letter or digit"
USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
USER_RULE = "1-64 characters: lowercase letters, digits, '.', '_' and '-'"


def encode_page_token(state: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_page_token(token: str | None) -> dict | None:
    if not token:
        return None
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Invalid("page_token is malformed", field="page_token") from None
    if not isinstance(state, dict):
        raise Invalid("page_token is malformed", field="page_token")
    return state


def start_key(state: dict | None, **partition: str) -> dict | None:
    """The table key a page token carries; `partition` (e.g. pk="WS#x") ties it to one listing."""
    if not state or state.get("k") is None:
        return None
    key = state["k"]
    if not isinstance(key, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in key.items()):
        raise Invalid("page_token is malformed", field="page_token")
    if any(key.get(attribute) != value for attribute, value in partition.items()):
        raise Invalid("page_token does not belong to this listing", field="page_token")
    return key


def check_page_size(value: int, maximum: int = 1000, field: str = "max_results") -> int:
    if not 1 <= value <= maximum:
        raise Invalid(f"{field} must be between 1 and {maximum}", field=field)
    return value
