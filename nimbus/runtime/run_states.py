"""A run's lifecycle: its statuses and the moves between them, as the service enforces them."""
from __future__ import annotations

STATUSES = ("NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed", "Failed", "Canceled")
TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
ACTIVE = tuple(s for s in STATUSES if s not in TERMINAL)
TRANSITIONS = {
    "NotStarted": {"Queued", "Preparing", "Running", "Failed", "Canceled"},
    "Queued": {"Preparing", "Running", "Failed", "Canceled"},
    "Preparing": {"Running", "Failed", "Canceled"},
    "Running": {"Finalizing", "Completed", "Failed", "Canceled"},
    "Finalizing": {"Completed", "Failed", "Canceled"},
}
