"""The context every service works with: the storage ports, the settings and a clock."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from chalicelib.domain.timestamps import iso

if TYPE_CHECKING:  # types only: the ports sit above this leaf
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
