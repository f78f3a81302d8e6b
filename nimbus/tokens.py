"""API tokens: create (optionally expiring, optionally scoped to one workspace and a role), list, revoke.

The service keeps only each token's digest: its secret is in the answer of `create_token` and nowhere else.
"""
from __future__ import annotations

import re

from nimbus.client import ApiClient, api_path

_DURATION = re.compile(r"\s*(\d+)\s*([smhdw]?)\s*")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expires_in(value: int | str | None) -> int | None:
    """Seconds from 3600, "3600", "90m", "12h", "30d" or "2w" (None: never expires)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expires_in must be seconds or a duration such as 30d, 12h or 3600, not {value!r}")
    if isinstance(value, int):
        return value
    match = _DURATION.fullmatch(value.lower())
    if match is None:
        raise ValueError(f"expires_in {value!r} is not a duration: use seconds, or a number with s, m, h, d or w "
                         "(e.g. 30d, 12h, 3600)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def create_token(client: ApiClient, user: str, name: str = "default", *, expires_in: int | str | None = None,
                 workspace: str | None = None, role: str | None = None) -> dict:
    """A new token of `user`, with its secret (`token`), shown this once. `workspace` scopes it to that one
    workspace; `role` caps its user's role there (reader, contributor or owner)."""
    body: dict = {"name": name}
    seconds = parse_expires_in(expires_in)
    if seconds is not None:
        body["expires_in"] = seconds
    if workspace is not None:
        body["workspace"] = workspace
    if role is not None:
        body["role"] = role
    return client.post(api_path("users", user, "tokens"), body)


def list_tokens(client: ApiClient, user: str) -> list[dict]:
    """`user`'s tokens: names, ids, creation, expiry, scope and when last used (to the hour); no secret."""
    return client.get(api_path("users", user, "tokens"))["tokens"]


def revoke_token(client: ApiClient, user: str, token_id: str) -> dict:
    """Revokes at once: the next request with the token is refused."""
    return client.request("DELETE", api_path("users", user, "tokens", token_id))
