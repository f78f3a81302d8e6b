"""The services every route uses: built once per process by the composition root (chalicelib/wiring.py)."""
from __future__ import annotations

from chalicelib import settings as settings_module
from chalicelib.services.container import Services
from chalicelib.wiring import build_services

_current: Services | None = None


def services() -> Services:
    global _current
    if _current is None:
        _current = build_services(settings_module.current())
    return _current


def use(replacement: Services | None) -> None:
    """Install the services every route uses (the local platform and the tests build their own)."""
    global _current
    _current = replacement
