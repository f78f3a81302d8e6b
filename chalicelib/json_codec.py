"""JSON on the hot paths, with orjson, keeping the stdlib's handling of NaN and ±inf.

orjson is many times faster than the stdlib but writes NaN and ±inf as `null`, refuses them on input,
reads integers beyond 64 bits as floats and cannot write them. The first cases are rare and detectable:
a document without `null` holds no non-finite number, and a parse error sends the text to the stdlib.
Request bodies, where a client's big integer must stay exact, are read with `loads_exact`.
"""
from __future__ import annotations

import json
import math
from typing import Any

import orjson

_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def loads_exact(data: str | bytes) -> Any:
    return json.loads(data)


def dumps_strict(value: Any) -> bytes:
    """Strict JSON for clients: NaN and ±inf become the strings "NaN", "Infinity", "-Infinity"."""
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return json.dumps(spell_non_finite(value), separators=(",", ":")).encode()
    if b"null" in data and has_non_finite(value):
        data = orjson.dumps(spell_non_finite(value))
    return data


def dumps_stored(value: Any) -> str:
    """JSON for storage: NaN and ±inf stay numbers (as the stdlib's literals), read back by `loads`."""
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return json.dumps(value, separators=(",", ":"))
    if b"null" in data and has_non_finite(value):
        return json.dumps(value, separators=(",", ":"))
    return data.decode()


def has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        try:  # a list of numbers is summed in C: finite sum, finite members (overflow goes the slow way)
            return not math.isfinite(math.fsum(value))
        except ValueError:  # inf + -inf
            return True
        except (TypeError, OverflowError):
            return any(has_non_finite(v) for v in value)
    return False


def spell_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _NAMES[repr(value)]
    if isinstance(value, dict):
        return {k: spell_non_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [spell_non_finite(v) for v in value]
    return value
