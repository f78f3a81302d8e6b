"""The callbacks through which compute targets read and report runs (compute/dispatcher.py, RunCallbacks)."""
from __future__ import annotations

from chalicelib.compute.dispatcher import RunCallbacks
from chalicelib.domain.context import Context
from chalicelib.errors import Conflict, NotFound
from chalicelib.services.identity import Identity
from chalicelib.services.runs import Runs


def run_callbacks(ctx: Context) -> RunCallbacks:
    runs, identity = Runs(ctx), Identity(ctx)

    def fail_run(workspace: str, run_id: str, error: dict) -> bool:
        try:
            runs.transition(workspace, run_id, "Failed", error)
        except (Conflict, NotFound):
            return False  # it ended meanwhile (the runner's own report, a cancel): that outcome stands
        return True

    def note_attempt_ends(workspace: str, run_id: str, ends: dict) -> bool:
        try:
            return runs.note_attempt_ends(workspace, run_id, ends)
        except (Conflict, NotFound):
            return False

    return RunCallbacks(get_run=runs.get, fail_run=fail_run, mint_run_token=identity.create_run_token,
                        note_attempt_ends=note_attempt_ends)
