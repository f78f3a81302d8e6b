"""Runs: the status machine, tags, properties, errors and child runs."""
from __future__ import annotations

import pytest

from tests.server.api.helpers import every_page, token_param

from chalicelib.domain.timestamps import iso, parse_iso

RUNS = "/v1/workspaces/ws/runs"

LEGAL = {
    ("NotStarted", "Queued"), ("NotStarted", "Preparing"), ("NotStarted", "Running"), ("NotStarted", "Failed"),
    ("NotStarted", "Canceled"),
    ("Queued", "Preparing"), ("Queued", "Running"), ("Queued", "Failed"), ("Queued", "Canceled"),
    ("Preparing", "Running"), ("Preparing", "Failed"), ("Preparing", "Canceled"),
    ("Running", "Finalizing"), ("Running", "Completed"), ("Running", "Failed"), ("Running", "Canceled"),
    ("Finalizing", "Completed"), ("Finalizing", "Failed"), ("Finalizing", "Canceled"),
}
# Walks from a new run's status to a final one that, together, take every legal transition.
WALKS = [
    ["NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed"],
    ["NotStarted", "Preparing", "Failed"],
    ["NotStarted", "Preparing", "Canceled"],
    ["NotStarted", "Running", "Completed"],
    ["NotStarted", "Failed"],
    ["NotStarted", "Canceled"],
    ["Queued", "Running", "Failed"],
    ["Queued", "Failed"],
    ["Queued", "Canceled"],
    ["Running", "Canceled"],
    ["Running", "Finalizing", "Failed"],
    ["Running", "Finalizing", "Canceled"],
]
ILLEGAL = [
    ("NotStarted", "NotStarted"), ("NotStarted", "Finalizing"), ("NotStarted", "Completed"),
    ("Queued", "NotStarted"), ("Queued", "Finalizing"), ("Queued", "Completed"),
    ("Preparing", "Queued"), ("Preparing", "Completed"),
    ("Running", "NotStarted"), ("Running", "Preparing"), ("Running", "Running"),
    ("Finalizing", "Running"),
    ("Completed", "Running"), ("Completed", "Failed"), ("Failed", "Completed"), ("Canceled", "Queued"),
]


@pytest.fixture
def ws(api):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    return api


def new_run(api, experiment: str | None = "exp", workspace: str = "ws", **fields) -> dict:
    body = {"experiment": experiment, **fields} if experiment else fields
    return api.ok("POST", f"/v1/workspaces/{workspace}/runs", body, status=201)


def move(api, run_id: str, status: str, error: dict | None = None, workspace: str = "ws"):
    body = {"status": status, **({"error": error} if error is not None else {})}
    return api.call("POST", f"/v1/workspaces/{workspace}/runs/{run_id}/status", body)


def run_in(api, status: str) -> dict:
    """A new run brought to `status` through legal transitions."""
    if status in ("NotStarted", "Queued", "Running"):
        return new_run(api, status=status)
    run = new_run(api, status="NotStarted" if status == "Preparing" else "Running")
    code, run = move(api, run["id"], status)
    assert code == 200, run
    return run


# --- create and show --------------------------------------------------------------------------------
def test_create_and_show(ws):
    run = new_run(ws, display_name="first try", tags={"lr": "0.1"}, properties={"git": "abc123"})
    assert run["status"] == "NotStarted"
    assert run["started"] is None and run["ended"] is None and run["duration_s"] is None
    assert run["display_name"] == "first try" and run["submitted_by"] == "admin"
    assert run["tags"] == {"lr": "0.1"} and run["properties"] == {"git": "abc123"}
    assert run["depth"] == 0 and run["root_id"] == run["id"] and run["parent_id"] is None
    assert run["children"] == {} and run["metrics"] == {} and run["error"] is None
    assert ws.ok("GET", f"{RUNS}/{run['id']}") == run

    plain = new_run(ws)
    assert plain["display_name"] == plain["id"]
    queued = new_run(ws, status="Queued")
    assert queued["status"] == "Queued" and queued["started"] is None
    running = new_run(ws, status="Running")
    assert running["status"] == "Running" and running["started"] == running["created"]


def test_new_run_cannot_start_terminal(ws):
    for status in ["Completed", "Failed", "Preparing", "Finalizing", "Bogus"]:
        code, body = ws.call("POST", RUNS, {"experiment": "exp", "status": status})
        assert code == 400 and body["field"] == "status", (status, body)
    assert ws.ok("GET", "/v1/workspaces/ws/experiments")["experiments"] == []


def test_unknown_run_is_404(ws):
    for run_id in ["0123456789abcdef", "not-alnum", "x" * 65]:
        code, body = ws.call("GET", f"{RUNS}/{run_id}")
        assert code == 404 and body["code"] == "NotFound"


# --- status machine ---------------------------------------------------------------------------------
def test_every_legal_transition(ws):
    taken = set()
    for walk in WALKS:
        run = new_run(ws, status=walk[0])
        for source, target in zip(walk, walk[1:]):
            code, moved = move(ws, run["id"], target)
            assert code == 200, (source, target, moved)
            assert moved["status"] == target
            taken.add((source, target))
    assert taken == LEGAL


def test_illegal_transitions_are_409_and_change_nothing(ws):
    by_source: dict[str, dict] = {}
    for source, target in ILLEGAL:
        run = by_source.get(source) or by_source.setdefault(source, run_in(ws, source))
        code, body = move(ws, run["id"], target)
        assert code == 409, (source, target, body)
        assert body["field"] == "status"
    for source, run in by_source.items():
        assert ws.ok("GET", f"{RUNS}/{run['id']}")["status"] == source


def test_unknown_status_is_400(ws):
    run = new_run(ws)
    for status in ["Done", "running", ""]:
        code, body = move(ws, run["id"], status)
        assert code == 400 and body["field"] == "status"
    assert ws.ok("GET", f"{RUNS}/{run['id']}")["status"] == "NotStarted"


def test_terminal_states_are_final(ws):
    for final in ["Completed", "Failed", "Canceled"]:
        run = run_in(ws, final)
        # repeating the final report is harmless and changes nothing
        code, again = move(ws, run["id"], final, {"message": "late"})
        assert code == 200 and again["ended"] == run["ended"] and again["error"] == run["error"]
        for target in ["NotStarted", "Queued", "Preparing", "Running", "Finalizing",
                       *({"Completed", "Failed", "Canceled"} - {final})]:
            assert move(ws, run["id"], target)[0] == 409
        code, body = ws.call("POST", f"{RUNS}/{run['id']}/cancel")
        assert code == (200 if final == "Canceled" else 409)
        assert ws.ok("GET", f"{RUNS}/{run['id']}")["status"] == final


def test_started_ended_and_duration(ws, services):
    # Given a clock the test moves
    now = [1_700_000_000.0]
    services.ctx.clock = lambda: now[0]
    run = new_run(ws)
    assert run["created"] == iso(now[0])

    # When it is queued, started 10 s later and completed 62.5 s after that
    now[0] += 5
    assert move(ws, run["id"], "Queued")[1]["started"] is None
    now[0] += 5
    code, running = move(ws, run["id"], "Running")
    assert running["started"] == iso(1_700_000_010.0) and running["ended"] is None
    now[0] += 30
    code, finalizing = move(ws, run["id"], "Finalizing")
    assert finalizing["started"] == running["started"] and finalizing["ended"] is None
    now[0] += 32.5
    code, done = move(ws, run["id"], "Completed")

    # Then
    assert done["ended"] == iso(1_700_000_072.5)
    assert done["duration_s"] == 62.5
    assert parse_iso(done["ended"]) - parse_iso(done["started"]) == 62.5
    assert ws.ok("GET", f"{RUNS}/{run['id']}")["duration_s"] == 62.5

    # A run that never started counts its duration from its creation
    never = new_run(ws)
    now[0] += 3
    code, canceled = ws.call("POST", f"{RUNS}/{never['id']}/cancel")
    assert code == 200 and canceled["started"] is None and canceled["duration_s"] == 3


def test_error_details_are_stored_on_failure(ws):
    error = {"code": "OOM", "message": "CUDA out of memory", "details": {"gpu": 0, "bytes": 123.5}}
    run = new_run(ws, status="Running")
    code, failed = move(ws, run["id"], "Failed", error)
    assert code == 200 and failed["error"] == error
    assert ws.ok("GET", f"{RUNS}/{run['id']}")["error"] == error

    # an error sent with a non-final status is not recorded
    other = new_run(ws)
    code, queued = move(ws, other["id"], "Queued", {"message": "ignored"})
    assert code == 200 and queued["error"] is None

    code, canceled = ws.call("POST", f"{RUNS}/{other['id']}/cancel")
    assert canceled["status"] == "Canceled" and "admin" in canceled["error"]["message"]


# --- tags and properties ----------------------------------------------------------------------------
def test_tags_are_mutable(ws):
    run = new_run(ws, tags={"a": "1", "b": "2"})
    path = f"{RUNS}/{run['id']}/tags"
    assert ws.ok("PATCH", path, {"tags": {"b": "20", "c": "3"}})["tags"] == {"a": "1", "b": "20", "c": "3"}
    assert ws.ok("PATCH", path, {"remove": ["a", "never-set"]})["tags"] == {"b": "20", "c": "3"}
    # setting and removing one key in one request: it is set
    assert ws.ok("PATCH", path, {"tags": {"c": "30"}, "remove": ["c", "b"]})["tags"] == {"c": "30"}
    assert ws.ok("GET", f"{RUNS}/{run['id']}")["tags"] == {"c": "30"}
    # unusual keys are fine
    odd = {"with.dot": "x", "with space": "y", "ünï": "z", "k" * 255: ""}
    assert ws.ok("PATCH", path, {"tags": odd})["tags"] == {"c": "30", **odd}
    # tags stay mutable after the run ends
    move(ws, run["id"], "Canceled")
    assert ws.ok("PATCH", path, {"tags": {"reviewed": "yes"}})["tags"]["reviewed"] == "yes"


def test_tag_errors(ws):
    run = new_run(ws, tags={"a": "1"})
    path = f"{RUNS}/{run['id']}/tags"
    code, body = ws.call("PATCH", path, {})
    assert code == 400 and body["field"] == "tags"
    code, body = ws.call("PATCH", path, {"tags": {"k" * 256: "v"}})
    assert code == 400 and body["field"].startswith("tags.")
    code, body = ws.call("PATCH", path, {"tags": {"k": "v" * 5001}})
    assert code == 400 and body["field"] == "tags.k"
    code, body = ws.call("PATCH", path, {"tags": {"k": 1}})
    assert code == 400 and body["field"] == "tags.k"
    code, body = ws.call("PATCH", path, {"tags": {f"k{i}": "v" for i in range(201)}})
    assert code == 400 and body["field"] == "tags"
    assert ws.ok("GET", f"{RUNS}/{run['id']}")["tags"] == {"a": "1"}


def test_properties_are_write_once(ws):
    run = new_run(ws, properties={"git": "abc"})
    path = f"{RUNS}/{run['id']}/properties"
    # new keys are added, the same value again is fine
    added = ws.ok("POST", path, {"properties": {"git": "abc", "data": "v1"}})
    assert added["properties"] == {"git": "abc", "data": "v1"}
    # a different value is refused, and nothing of that request is stored
    code, body = ws.call("POST", path, {"properties": {"git": "def", "extra": "x"}})
    assert code == 409 and body["field"] == "properties" and "git" in body["message"]
    assert ws.ok("GET", f"{RUNS}/{run['id']}")["properties"] == {"git": "abc", "data": "v1"}
    code, body = ws.call("POST", path, {"properties": {}})
    assert code == 400 and body["field"] == "properties"
    # properties can be added to an ended run, still write-once
    move(ws, run["id"], "Canceled")
    ws.ok("POST", path, {"properties": {"late": "1"}})
    assert ws.call("POST", path, {"properties": {"late": "2"}})[0] == 409


# --- child runs -------------------------------------------------------------------------------------
def test_child_runs_to_depth_three(ws):
    root = new_run(ws, "exp", status="Running")
    chain = [root]
    for depth in (1, 2, 3):
        child = new_run(ws, None, parent_id=chain[-1]["id"], status="Running")
        assert child["depth"] == depth
        assert child["parent_id"] == chain[-1]["id"]
        assert child["root_id"] == root["id"]
        assert child["experiment"] == "exp"
        chain.append(child)
    # a child may repeat its parent's experiment but not name another
    new_run(ws, "exp", parent_id=root["id"])
    code, body = ws.call("POST", RUNS, {"experiment": "other", "parent_id": root["id"]})
    assert code == 400 and body["field"] == "experiment"
    for parent, child in zip(chain, chain[1:]):
        children = ws.ok("GET", f"{RUNS}/{parent['id']}/children")["runs"]
        assert child["id"] in [r["id"] for r in children]
    assert ws.ok("GET", f"{RUNS}/{root['id']}")["children"] == {"Running": 1, "NotStarted": 1}
    assert ws.ok("GET", f"{RUNS}/{chain[2]['id']}")["children"] == {"Running": 1}
    assert ws.ok("GET", f"{RUNS}/{chain[3]['id']}/children")["runs"] == []


def test_children_are_paged(ws):
    parent = new_run(ws, status="Running")
    ids = [new_run(ws, None, parent_id=parent["id"])["id"] for _ in range(5)]
    pages = every_page(lambda token: ws.ok("GET", f"{RUNS}/{parent['id']}/children?max_results=2" + token_param(token)))
    assert all(len(page["runs"]) <= 2 for page in pages)
    seen = [r["id"] for page in pages for r in page["runs"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert len(pages) >= 3
    assert all(r["parent_id"] == parent["id"] for r in ws.ok("GET", f"{RUNS}/{parent['id']}/children")["runs"])


def test_a_page_token_of_another_listing_is_refused(ws):
    first, second = new_run(ws, status="Running"), new_run(ws, status="Running")
    for _ in range(3):
        new_run(ws, None, parent_id=first["id"])
    token = ws.ok("GET", f"{RUNS}/{first['id']}/children?max_results=1")["next_page_token"]
    status, body = ws.call("GET", f"{RUNS}/{second['id']}/children?page_token={token}")
    assert status == 400 and body["field"] == "page_token"


def test_parent_view_counts_children_by_status(ws):
    parent = new_run(ws, status="Running")
    kids = [new_run(ws, None, parent_id=parent["id"], status="Running") for _ in range(4)]
    new_run(ws, None, parent_id=parent["id"])
    move(ws, kids[0]["id"], "Completed")
    move(ws, kids[1]["id"], "Completed")
    move(ws, kids[2]["id"], "Failed", {"message": "x"})
    grandchild = new_run(ws, None, parent_id=kids[3]["id"])
    assert ws.ok("GET", f"{RUNS}/{parent['id']}")["children"] == {"Completed": 2, "Failed": 1, "Running": 1,
                                                                   "NotStarted": 1}
    assert ws.ok("GET", f"{RUNS}/{kids[3]['id']}")["children"] == {"NotStarted": 1}
    assert ws.ok("GET", f"{RUNS}/{grandchild['id']}")["children"] == {}


def test_no_child_for_an_ended_parent(ws):
    for final in ["Completed", "Failed", "Canceled"]:
        parent = run_in(ws, final)
        code, body = ws.call("POST", RUNS, {"parent_id": parent["id"]})
        assert code == 409, body
        assert ws.ok("GET", f"{RUNS}/{parent['id']}/children")["runs"] == []
    assert ws.ok("GET", "/v1/workspaces/ws/experiments/exp")["run_count"] == 3


def test_missing_parent_is_404(ws):
    code, body = ws.call("POST", RUNS, {"experiment": "exp", "parent_id": "0123456789abcdef"})
    assert code == 404


def test_run_of_another_workspace_is_404(ws):
    # Given a run in ws, and another workspace the caller also owns
    ws.ok("POST", "/v1/workspaces", {"name": "other"})
    run = new_run(ws, status="Running")
    elsewhere = f"/v1/workspaces/other/runs/{run['id']}"

    # Then no route of the other workspace reaches it
    for method, path, body in [
        ("GET", elsewhere, None),
        ("GET", f"{elsewhere}/children", None),
        ("PATCH", f"{elsewhere}/tags", {"tags": {"a": "b"}}),
        ("POST", f"{elsewhere}/properties", {"properties": {"a": "b"}}),
        ("POST", f"{elsewhere}/status", {"status": "Completed"}),
        ("POST", f"{elsewhere}/cancel", None),
        ("POST", f"{elsewhere}/metrics", {"metrics": [{"name": "m", "values": [1]}]}),
        ("GET", f"{elsewhere}/metrics", None),
        ("POST", f"{elsewhere}/logs/stdout", {"text": "x"}),
        ("GET", f"{elsewhere}/logs", None),
        ("POST", f"{elsewhere}/outputs/uploads", {"paths": ["a"]}),
        ("GET", f"{elsewhere}/outputs", None),
        ("POST", "/v1/workspaces/other/runs", {"parent_id": run["id"]}),
    ]:
        code, reply = ws.call(method, path, body)
        assert code == 404, (method, path, reply)
    shown = ws.ok("GET", f"{RUNS}/{run['id']}")
    assert shown["status"] == "Running" and shown["tags"] == {} and shown["metrics"] == {}
    assert shown["children"] == {}
