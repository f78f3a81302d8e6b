"""Ids of runs, snapshots and other items."""
from __future__ import annotations

import secrets
import time
from typing import Callable


def new_id(clock: Callable[[], float] = time.time) -> str:
    """Time-ordered and unique: 12 hex digits of milliseconds, then 10 random hex digits."""
    return f"{int(clock() * 1000):012x}{secrets.token_hex(5)}"
