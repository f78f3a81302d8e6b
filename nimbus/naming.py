"""One policy for the names and paths users choose: metric names, and output, model and snapshot paths.

Both sides read it: the SDK checks before it sends, the service checks what it stores. A name is 1-255
characters with no control character and no bidirectional formatting character (which make a name
read differently from what it is), no space at either end, no backslash, and no '/'-separated part
that is empty, '.' or '..' ("train/loss" is a name; "../x" and "/etc/passwd" are not). A path is a
relative POSIX path of up to 1024 characters whose every part is such a name.
"""
from __future__ import annotations

import re
from typing import Any

MAX_NAME = 255
MAX_PATH = 1024
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# One search finds any refused character: the control characters (Unicode's Cc: U+0000-001F and
# U+007F-009F), the bidirectional ones and the backslash. `Run.log` checks every name it is given.
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\\\\" + "".join(sorted(BIDI_CONTROLS)) + "]")


def name_problem(name: Any, limit: int = MAX_NAME) -> str | None:
    """What is wrong with `name` under the policy, or None when nothing is."""
    if not isinstance(name, str) or not 1 <= len(name) <= limit:
        return f"must be 1-{limit} characters"
    refused = _REFUSED.search(name)
    if refused is not None:
        if refused.group() == "\\":
            return "must not hold a backslash"
        return f"must not hold the control or bidirectional character U+{ord(refused.group()):04X}"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "must not start or end with '/' or have an empty, '.' or '..' part between '/'s"
    if any(part != part.strip() for part in parts):
        return "must not start or end with a space, nor have a part that does"
    return None


def path_problem(path: Any) -> str | None:
    """What is wrong with a relative POSIX path under the policy, or None when nothing is."""
    if not isinstance(path, str) or not 1 <= len(path) <= MAX_PATH:
        return f"must be a relative path of 1-{MAX_PATH} characters"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "must be a relative path, without empty, '.' or '..' parts"
    return name_problem(path, MAX_PATH)
