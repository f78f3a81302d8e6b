"""Who may report a run: the runner whose Preparing the service accepted holds it; a later Batch attempt
restarts it; every other runner is refused (409). On both backends."""
from __future__ import annotations

import threading

import pytest

from chalicelib.errors import Conflict
from chalicelib.domain import table_keys
from chalicelib.services.runs import Reporter
from chalicelib.store.table import Update

RUNS = "/v1/workspaces/ws/runs"
A, B, C = "runner-aaaaaaaa", "runner-bbbbbbbb", "runner-cccccccc"


@pytest.fixture
def ws(api):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    return api


def queued_run(api) -> dict:
    return api.ok("POST", RUNS, {"experiment": "e", "status": "Queued"})


def report(api, run_id: str, status: str, runner_id: str | None = None, attempt: int | None = None, **more):
    body = {"status": status, **more}
    body.update({k: v for k, v in (("runner_id", runner_id), ("attempt", attempt)) if v is not None})
    return api.call("POST", f"{RUNS}/{run_id}/status", body)


def beat(api, run_id: str, runner_id: str | None = None, attempt: int | None = None):
    body = {k: v for k, v in (("runner_id", runner_id), ("attempt", attempt)) if v is not None}
    return api.call("POST", f"{RUNS}/{run_id}/heartbeat", body or None)


def test_the_runner_whose_preparing_was_accepted_holds_the_run(ws):
    run = queued_run(ws)
    assert run["runner_id"] is None and run["attempt"] is None and run["attempts"] == []

    code, prepared = report(ws, run["id"], "Preparing", A, 1)
    assert code == 200 and prepared["status"] == "Preparing"
    assert prepared["runner_id"] == A and prepared["attempt"] == 1
    assert prepared["attempts"] == [{"attempt": 1, "runner_id": A, "started": prepared["attempts"][0]["started"]}]

    # Its own report repeated (a retried request that had gone through) succeeds and changes nothing
    code, again = report(ws, run["id"], "Preparing", A, 1)
    assert code == 200 and again == prepared
    # Another runner of the same attempt is refused, whatever it reports
    for status in ("Preparing", "Running", "Failed", "Completed"):
        code, error = report(ws, run["id"], status, B, 1)
        assert code == 409 and error["field"] == "runner_id", (status, error)
    code, running = report(ws, run["id"], "Running", A, 1)
    assert code == 200 and running["status"] == "Running"
    assert report(ws, run["id"], "Running", A, 1)[0] == 200  # repeated too
    assert report(ws, run["id"], "Preparing", A, 1)[0] == 409  # but no going back
    assert report(ws, run["id"], "Completed", A, 1)[1]["status"] == "Completed"


def test_a_later_attempt_restarts_an_active_run_and_the_earlier_one_can_no_longer_report(ws, services):
    # Given a run whose attempt 1 runs the script
    run = queued_run(ws)
    report(ws, run["id"], "Preparing", A, 1)
    first = report(ws, run["id"], "Running", A, 1)[1]
    stale = "2026-01-01T00:00:00.000Z"
    services.ctx.table.update(Update(table_keys.run(run["id"]), set={"heartbeat": stale}))

    # When Batch runs attempt 2 (the host of attempt 1 went away) and its runner reports Preparing
    code, restarted = report(ws, run["id"], "Preparing", B, 2)

    # Then the run is back in Preparing, held by attempt 2, its start and heartbeat clock kept fresh
    assert code == 200, restarted
    assert restarted["status"] == "Preparing" and restarted["runner_id"] == B and restarted["attempt"] == 2
    assert restarted["started"] == first["started"]
    assert [(a["attempt"], a["runner_id"]) for a in restarted["attempts"]] == [(1, A), (2, B)]
    assert services.runs.get("ws", run["id"])["heartbeat"] > stale
    # and attempt 1's runner, if still alive, is refused whatever it says
    for status in ("Preparing", "Running", "Finalizing", "Completed", "Failed"):
        code, error = report(ws, run["id"], status, A, 1)
        assert code == 409 and error["field"] == "attempt", (status, error)
    assert report(ws, run["id"], "Failed", attempt=1)[0] == 409  # a child node of attempt 1
    # another runner of attempt 2 cannot take it over; attempt 2 itself goes on to the end
    assert report(ws, run["id"], "Preparing", C, 2)[1]["field"] == "runner_id"
    assert report(ws, run["id"], "Running", B, 2)[0] == 200
    assert report(ws, run["id"], "Completed", B, 2)[1]["status"] == "Completed"
    # an ended run is restarted by no attempt
    assert report(ws, run["id"], "Preparing", C, 3)[0] == 409
    assert ws.ok("GET", f"{RUNS}/{run['id']}")["status"] == "Completed"


def test_a_restart_from_preparing_and_finalizing_and_a_first_claim_of_a_later_attempt(ws):
    for reached in ("Preparing", "Finalizing"):
        run = queued_run(ws)
        report(ws, run["id"], "Preparing", A, 1)
        if reached == "Finalizing":
            report(ws, run["id"], "Running", A, 1)
            report(ws, run["id"], "Finalizing", A, 1)
        code, restarted = report(ws, run["id"], "Preparing", B, 3)
        assert code == 200 and restarted["status"] == "Preparing" and restarted["attempt"] == 3
    # Attempt 1 ended before its runner reported anything: attempt 2 claims the run as a first runner would
    run = queued_run(ws)
    code, claimed = report(ws, run["id"], "Preparing", B, 2)
    assert code == 200 and claimed["attempt"] == 2 and [a["attempt"] for a in claimed["attempts"]] == [2]


def test_reports_without_an_identity_work_as_before(ws):
    run = queued_run(ws)
    assert report(ws, run["id"], "Preparing")[1]["status"] == "Preparing"
    # A runner naming itself may still report a run that nobody holds, but cannot claim it late
    assert report(ws, run["id"], "Running", A, 1)[1]["status"] == "Running"
    assert report(ws, run["id"], "Preparing", B, 2)[1]["field"] == "status"
    # A user's report needs no identity, held or not
    held = queued_run(ws)
    report(ws, held["id"], "Preparing", A, 1)
    assert ws.call("POST", f"{RUNS}/{held['id']}/cancel")[1]["status"] == "Canceled"


@pytest.mark.parametrize("identity", [{"runner_id": "short"}, {"runner_id": "a b c d e f g h"}, {"attempt": 0},
                                      {"attempt": 11}, {"attempt": "2"}, {"attempt": True}, {"runner_id": 5}])
def test_a_malformed_identity_is_400(ws, identity):
    run = queued_run(ws)
    code, error = ws.call("POST", f"{RUNS}/{run['id']}/status", {"status": "Preparing", **identity})
    assert code == 400 and error["field"] in ("runner_id", "attempt"), error
    code, error = ws.call("POST", f"{RUNS}/{run['id']}/heartbeat", identity)
    assert code == 400 and error["field"] in ("runner_id", "attempt"), error
    assert ws.ok("GET", f"{RUNS}/{run['id']}")["status"] == "Queued"


def test_beats_of_a_runner_that_no_longer_holds_the_run_are_refused(ws):
    run = queued_run(ws)
    assert beat(ws, run["id"], attempt=1)[0] == 200  # before any Preparing: the attempt alone
    report(ws, run["id"], "Preparing", A, 1)
    assert beat(ws, run["id"], A, 1)[0] == 200
    assert beat(ws, run["id"])[0] == 200  # a beat naming nobody, as before
    code, error = beat(ws, run["id"], B, 1)
    assert code == 409 and error["field"] == "runner_id"

    report(ws, run["id"], "Preparing", B, 2)
    code, error = beat(ws, run["id"], A, 1)
    assert code == 409 and error["field"] == "attempt"
    assert beat(ws, run["id"], attempt=1)[0] == 409  # a child node of attempt 1
    assert beat(ws, run["id"], attempt=2)[0] == 200  # a child node of attempt 2
    assert beat(ws, run["id"], B, 2)[0] == 200


def test_two_preparing_reports_of_one_attempt_cannot_both_win(ws, services):
    # Given a run held by attempt 1, and two runners of attempt 2 that both read it before either writes
    run = queued_run(ws)
    services.runs.transition("ws", run["id"], "Preparing", reporter=Reporter(A, 1))
    services.runs.transition("ws", run["id"], "Running", reporter=Reporter(A, 1))
    barrier, read = threading.Barrier(2), threading.local()
    get = services.runs.get

    def get_together(workspace, run_id):
        item = get(workspace, run_id)
        if not getattr(read, "once", False):
            read.once = True
            barrier.wait(10)
        return item

    services.runs.get = get_together
    results: dict[str, object] = {}

    def restart(runner_id):
        try:
            results[runner_id] = services.runs.transition("ws", run["id"], "Preparing", reporter=Reporter(runner_id, 2))
        except Conflict as err:
            results[runner_id] = err

    threads = [threading.Thread(target=restart, args=(r,)) for r in (B, C)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    del services.runs.get

    # Then exactly one holds the run; the other was refused on its second reading
    won = [r for r, result in results.items() if isinstance(result, dict)]
    lost = [r for r, result in results.items() if isinstance(result, Conflict)]
    assert len(won) == 1 and len(lost) == 1, results
    assert results[lost[0]].field == "runner_id"
    held = services.runs.get("ws", run["id"])
    assert held["runner_id"] == won[0] and held["attempt"] == 2
    assert [(a["attempt"], a["runner_id"]) for a in held["attempts"]] == [(1, A), (2, won[0])]

