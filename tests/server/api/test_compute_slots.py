"""An instance target's max_concurrent_runs, enforced by the claims on both backends."""
from __future__ import annotations

import threading

import pytest

from chalicelib.compute.instance_queue import LEASE_SECONDS, slot_key, slots_pk
from chalicelib.domain import table_keys
from chalicelib.store.table import Query
from tests.server.api.helpers import all_at_once
from tests.server.api.test_compute import WS, submit

COMPUTES = f"{WS}/computes"


@pytest.fixture
def snapshot(api, services) -> str:
    """A workspace `team` holding a one-file snapshot; a deployment that queues instance runs."""
    import hashlib

    from chalicelib.compute.target_dispatcher import TargetDispatcher
    from tests.server.api.test_submit import RecordingDispatcher

    services.dispatcher = TargetDispatcher({"local": RecordingDispatcher(), "instance": services.instance_queue})
    api.ok("POST", "/v1/workspaces", {"name": "team"})
    content = b"print('hello')\n"
    digest = hashlib.sha256(content).hexdigest()
    services.ctx.blobs.put_bytes(f"{services.workspaces.record('team')['blob_prefix']}snapshots/content/{digest}", content)
    return api.ok("POST", f"{WS}/snapshots", {"files": [{"path": "train.py", "digest": digest,
                                                          "size": len(content)}]})["id"]


@pytest.fixture
def clock(services) -> list[float]:
    now = [services.ctx.clock()]
    services.ctx.clock = lambda: now[0]
    return now


def box(api, limit: int) -> None:
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance", "settings": {"max_concurrent_runs": limit}})


def queued(api, snapshot, clock, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        clock[0] += 1  # run ids are time-ordered: the queue's order is the submissions'
        ids.append(submit(api, snapshot, "box")[1]["id"])
    return ids


def claim(api):
    status, body = api.call("POST", f"{COMPUTES}/box/claim")
    assert status in (200, 204), body
    return body


def finish(api, claimed: dict, outcome: str = "Completed") -> None:
    for status in ("Running", outcome):
        api.ok("POST", f"{WS}/runs/{claimed['run']['id']}/status", {"status": status}, token=claimed["run_token"])


def test_concurrent_agents_get_no_more_runs_than_the_target_allows(api, services, snapshot, clock):
    # Given five queued runs on a target that runs two at once, and ten agents claiming at once
    box(api, 2)
    runs = queued(api, snapshot, clock, 5)
    claims, lock = [], threading.Lock()

    def agent(_: int) -> None:
        body = claim(api)
        if body:
            with lock:
                claims.append(body)

    # When they race, then two runs are handed out, the two oldest
    assert all_at_once(agent, 10) == []
    assert sorted(c["run"]["id"] for c in claims) == runs[:2]
    assert claim(api) is None

    # When one of them starts, it still counts; when it ends, the next claim gets the next run
    first, second = sorted(claims, key=lambda c: c["run"]["id"])
    api.ok("POST", f"{WS}/runs/{first['run']['id']}/status", {"status": "Running"}, token=first["run_token"])
    assert claim(api) is None
    api.ok("POST", f"{WS}/runs/{first['run']['id']}/status", {"status": "Completed"}, token=first["run_token"])
    third = claim(api)
    assert third["run"]["id"] == runs[2]
    assert claim(api) is None

    # A canceled run frees its slot too, and a failed one
    api.ok("POST", f"{WS}/runs/{second['run']['id']}/cancel")
    fourth = claim(api)
    assert fourth["run"]["id"] == runs[3] and claim(api) is None
    finish(api, third, "Failed")
    assert claim(api)["run"]["id"] == runs[4]
    holders = {i["holder"] for i in services.ctx.table.query_all(Query(slots_pk("team", "box")))}
    assert len(holders) == 2 and runs[4] in holders


def test_a_run_whose_lease_lapses_keeps_its_slot_when_it_is_claimed_again(api, services, snapshot, clock):
    box(api, 1)
    first, second = queued(api, snapshot, clock, 2)
    lost = claim(api)
    assert lost["run"]["id"] == first and claim(api) is None
    clock[0] += LEASE_SECONDS + 1
    again = claim(api)
    assert again["run"]["id"] == first and again["run_token"] != lost["run_token"]
    assert claim(api) is None  # the one slot is the re-leased run's
    finish(api, again)
    assert claim(api)["run"]["id"] == second


def test_the_slot_of_a_lapsed_lease_goes_to_the_next_run_and_its_token_stops_working(api, services, snapshot,
                                                                                      clock):
    # Given a slot held by a queued run whose lease lapsed, and an older run waiting (as a crash can leave it)
    box(api, 1)
    older, holder = queued(api, snapshot, clock, 2)
    entry_key = table_keys.instance_queue_entry("team", "box", older)
    parked = services.ctx.table.get_item(entry_key)
    services.ctx.table.delete(entry_key.pk, entry_key.sk)  # out of the way while the holder is claimed
    held = claim(api)
    assert held["run"]["id"] == holder
    services.ctx.table.put(parked)
    clock[0] += LEASE_SECONDS + 1

    # When the next claim comes, then the older run gets the slot and the lapsed lease's token is refused
    taken = claim(api)
    assert taken["run"]["id"] == older
    assert services.ctx.table.get_item(slot_key("team", "box", 0))["holder"] == older
    assert api.call("GET", f"{WS}/runs/{holder}", token=held["run_token"])[0] == 401
    assert claim(api) is None

    # And once that run ends, the run that lost its slot is handed out again, with a fresh token
    finish(api, taken)
    again = claim(api)
    assert again["run"]["id"] == holder and again["run_token"] != held["run_token"]


def test_deleting_the_target_deletes_its_slots(api, services, snapshot, clock):
    box(api, 2)
    (run,) = queued(api, snapshot, clock, 1)
    claimed = claim(api)
    finish(api, claimed)
    assert list(services.ctx.table.query_all(Query(slots_pk("team", "box"))))
    api.ok("DELETE", f"{COMPUTES}/box")
    assert list(services.ctx.table.query_all(Query(slots_pk("team", "box")))) == []
    assert run == claimed["run"]["id"]
