"""Small helpers shared by the services: ids, clock, names, opaque page tokens."""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
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


class MonotonicIds:
    """Ids that sort in the order they were made, within one process (a ULID's monotonic mode).

    An id is 22 lowercase hex digits: 12 of milliseconds, then a 40-bit tail. The first id of a
    millisecond draws its tail at random; the next ones in the same millisecond (or while the clock
    stands behind the last id, if it was set back) add one to the last id instead, so two runs made in
    one millisecond still sort in creation order. A tail that overflows carries into the milliseconds.
    """

    TAIL_BITS = 40

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0  # the last id handed out, as a number: milliseconds << TAIL_BITS | tail

    def new(self, clock: Callable[[], float] = time.time) -> str:
        millis = int(clock() * 1000)
        with self._lock:
            if millis > self._last >> self.TAIL_BITS:
                self._last = millis << self.TAIL_BITS | secrets.randbits(self.TAIL_BITS)
            else:
                self._last += 1
            value = self._last
        return f"{value:022x}"

    def forget(self) -> None:
        """A forked child starts afresh (random tails again), so it never repeats its parent's next id."""
        self._lock = threading.Lock()
        self._last = 0


_IDS = MonotonicIds()
os.register_at_fork(after_in_child=_IDS.forget)


def new_id(clock: Callable[[], float] = time.time) -> str:
    """Unique, and in creation order within this process: see MonotonicIds."""
    return _IDS.new(clock)


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
