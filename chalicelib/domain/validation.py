"""Validators the services share: names, tags and properties, page sizes and opaque page tokens."""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from chalicelib.errors import Invalid

MAX_TAGS = 200
ENTRY_KEY = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
MAX_VALUE = 5000


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


def check_experiment_name(name: str) -> str:
    return check_name(name, EXPERIMENT_NAME, "experiment", EXPERIMENT_RULE)


def check_entries(entries: dict[str, Any], field: str) -> dict[str, str]:
    if not isinstance(entries, dict):
        raise Invalid(f"{field} must be an object of string keys and values", field=field)
    if len(entries) > MAX_TAGS:
        raise Invalid(f"at most {MAX_TAGS} {field} per request", field=field)
    for key, value in entries.items():
        if not isinstance(key, str) or not ENTRY_KEY.fullmatch(key):
            raise Invalid(f"{field} key {key!r} must be 1-255 printable characters", field=f"{field}.{key}")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise Invalid(f"{field}.{key} must be a string of at most {MAX_VALUE} characters", field=f"{field}.{key}")
    return entries


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
