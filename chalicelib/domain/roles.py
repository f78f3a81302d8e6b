"""Workspace roles, weakest first: a member's role, and a scoped token's ceiling on it."""
from __future__ import annotations

from chalicelib.errors import Invalid

ROLES = ("reader", "contributor", "owner")


def rank(role: str) -> int:
    return ROLES.index(role)


def check_role(role: str, field: str = "role") -> str:
    if role not in ROLES:
        raise Invalid(f"{field} must be one of {', '.join(ROLES)}", field=field)
    return role


def capped(role: str, ceiling: str | None) -> str:
    """The weaker of a member's role and a token's ceiling (None: no ceiling)."""
    return role if ceiling is None or rank(role) <= rank(ceiling) else ceiling
