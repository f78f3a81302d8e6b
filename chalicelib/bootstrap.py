"""Create the first admin of a deployment: `NIMBUS_BACKEND=aws python -m chalicelib.bootstrap [NAME]`.

The local platform does this at its first start; a cloud deployment runs it once, with credentials
that may write the table, and keeps the printed token somewhere safe (it is not stored anywhere).
"""
from __future__ import annotations

import sys

from chalicelib.settings import Settings
from chalicelib.wiring import build_services


def create_first_admin(settings: Settings, name: str = "admin") -> str | None:
    """The new admin's token, or None when that admin already exists."""
    return build_services(settings).identity.bootstrap_admin(name)


def main(argv: list[str]) -> int:
    name = argv[0] if argv else "admin"
    token = create_first_admin(Settings.from_env(), name)
    if token is None:
        print(f"admin {name!r} already exists; mint a new token with an existing admin token", file=sys.stderr)
        return 1
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
