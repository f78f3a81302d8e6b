"""Writes that lost a conditional race are tried again after a short, jittered pause."""
from __future__ import annotations

import random


def contention_pause(attempt: int) -> float:
    """Full jitter, growing to at most 0.2 s: racers spread out instead of colliding again together."""
    return random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6)))
