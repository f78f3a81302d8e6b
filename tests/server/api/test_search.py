"""Searching an experiment's runs: filters, orderings and paging."""
from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import pytest

from tests.server.api.helpers import every_page

WS = "/v1/workspaces/ws"
SEARCH = f"{WS}/experiments/exp/runs"
BASE_TIME = 1_700_000_000.0


def status_of(i: int) -> str:
    return {0: "Completed", 1: "Failed"}.get(i % 4, "Running")


def acc_of(i: int) -> float | None:
    return None if i % 5 == 0 else i / 100


@pytest.fixture
def runs(api, services) -> list[str]:
    """30 runs, one second apart: tags, an `acc` metric on most, a `loss` on all, and mixed statuses.

    Made through the services (the routes are covered elsewhere) to keep the moto backend quick."""
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    admin = services.identity.authenticate(f"Bearer {api.token}")
    now = [BASE_TIME]
    services.ctx.clock = lambda: now[0]
    ids = []
    for i in range(30):
        now[0] = BASE_TIME + i
        tags = {"all": "yes", **({"team": ["red", "blue"][i % 3]} if i % 3 < 2 else {}),
                **({"even": ""} if i % 2 == 0 else {})}
        run = services.runs.create(admin, "ws", "exp", status="Running", tags=tags)
        metrics = [{"name": "loss", "values": [1 - i / 30]}]
        if acc_of(i) is not None:
            metrics.append({"name": "acc", "values": [0.0, acc_of(i)]})
        services.metrics.log("ws", run["id"], metrics)
        if status_of(i) != "Running":
            services.runs.transition("ws", run["id"], status_of(i))
        ids.append(run["id"])
    # a run of another experiment never shows up
    services.runs.create(admin, "ws", "other", tags={"all": "yes"})
    return ids


def search(api, **params) -> dict:
    return api.ok("GET", f"{SEARCH}?{urlencode(params, doseq=True)}" if params else SEARCH)


def search_all(api, **params) -> list[str]:
    found = search(api, max_results=1000, **params)
    assert found["next_page_token"] is None
    assert found["total"] == len(found["runs"])
    return [r["id"] for r in found["runs"]]


def test_filters(api, runs):
    def where(predicate) -> set[str]:
        return {run_id for i, run_id in enumerate(runs) if predicate(i)}

    assert set(search_all(api)) == set(runs)
    # by status
    assert set(search_all(api, status="Completed")) == where(lambda i: status_of(i) == "Completed")
    assert set(search_all(api, status=["Completed", "Failed"])) == where(lambda i: status_of(i) != "Running")
    # by tag key, by key=value, by an empty value, and several together
    assert set(search_all(api, tag="team")) == where(lambda i: i % 3 < 2)
    assert set(search_all(api, tag="team=red")) == where(lambda i: i % 3 == 0)
    assert set(search_all(api, tag="even=")) == where(lambda i: i % 2 == 0)
    assert set(search_all(api, tag=["team=blue", "even"])) == where(lambda i: i % 3 == 1 and i % 2 == 0)
    assert search_all(api, tag="team=green") == []
    # by metric threshold (runs without the metric never match)
    assert set(search_all(api, metric="acc>0.2")) == where(lambda i: acc_of(i) is not None and acc_of(i) > 0.2)
    assert set(search_all(api, metric="acc <= 0.1")) == where(lambda i: acc_of(i) is not None and acc_of(i) <= 0.1)
    assert set(search_all(api, metric=["acc=0.07", "loss!=0"])) == {runs[7]}
    assert set(search_all(api, metric=["acc>=0.1", "loss>0.5"])) == where(
        lambda i: acc_of(i) is not None and acc_of(i) >= 0.1 and 1 - i / 30 > 0.5)
    # everything together
    assert set(search_all(api, status="Running", tag="team=blue", metric="acc>0.05")) == where(
        lambda i: status_of(i) == "Running" and i % 3 == 1 and acc_of(i) is not None and acc_of(i) > 0.05)
    # the summaries carry what was filtered on
    for run in search(api, tag="team=red", max_results=1000)["runs"]:
        assert run["tags"]["team"] == "red" and run["experiment"] == "exp" and "loss" in run["metrics"]


def test_orderings_and_paging(api, runs):
    with_acc = [i for i in range(30) if acc_of(i) is not None]
    without_acc = [runs[i] for i in range(30) if acc_of(i) is None]

    # by metric, both ways: runs without the metric come last either way
    desc = search_all(api, order_by="metrics.acc desc")
    assert desc[:len(with_acc)] == [runs[i] for i in sorted(with_acc, key=acc_of, reverse=True)]
    assert set(desc[len(with_acc):]) == set(without_acc)
    asc = search_all(api, order_by="metrics.acc asc")
    assert asc[:len(with_acc)] == [runs[i] for i in sorted(with_acc, key=acc_of)]
    assert set(asc[len(with_acc):]) == set(without_acc)
    assert search_all(api, order_by="metrics.loss asc") == list(reversed(runs))

    # by creation time, newest first unless asked otherwise
    assert search_all(api) == list(reversed(runs))
    oldest_first = search(api, order_by="created asc", max_results=1000)["runs"]
    assert [r["id"] for r in oldest_first] == runs
    created = [r["created"] for r in oldest_first]
    assert created == sorted(created) and len(set(created)) == 30

    # by end time: runs still going come last
    ended = search_all(api, order_by="ended asc")
    finished = [r for i, r in enumerate(runs) if status_of(i) != "Running"]
    assert set(ended[:len(finished)]) == set(finished)

    # ordering and filtering together
    assert search_all(api, status="Completed", order_by="metrics.loss desc") == [
        runs[i] for i in range(30) if status_of(i) == "Completed"]

    # When read 7 at a time
    pages = every_page(lambda token: search(api, max_results=7, order_by="metrics.acc asc",
                                            **({"page_token": token} if token else {})))
    assert all(len(page["runs"]) <= 7 and page["total"] == 30 for page in pages)
    seen = [r["id"] for page in pages for r in page["runs"]]
    # Then every run comes once, in the order of a single big page
    assert len(pages) == 5
    assert seen == asc
    assert sorted(seen) == sorted(runs)


def test_bad_page_tokens_are_400(api, services):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    admin = services.identity.authenticate(f"Bearer {api.token}")
    for _ in range(9):
        services.runs.create(admin, "ws", "exp", status="Running")
    services.runs.create(admin, "ws", "other", status="Running")
    first = search(api, max_results=7, status="Running")
    token = first["next_page_token"]
    assert token
    state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))

    def encoded(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    tampered = [
        "not a token!",
        "%%%",
        token[:-3],
        encoded([1, 2]),
        encoded({**state, "o": -7}),
        encoded({**state, "o": "7"}),
        encoded({**state, "f": "0" * 16}),
        encoded({"o": 7}),
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
    ]
    for bad in tampered:
        query = urlencode({"status": "Running", "max_results": 7, "page_token": bad})
        code, body = api.call("GET", f"{SEARCH}?{query}")
        assert code == 400, (bad, body)
        assert body["field"] == "page_token"
    # a token of another search: other filters, another order, another experiment
    for params in ({"status": "Completed"}, {"status": "Running", "order_by": "created asc"}, {}):
        code, body = api.call("GET", f"{SEARCH}?{urlencode({**params, 'max_results': 7, 'page_token': token})}")
        assert code == 400 and body["field"] == "page_token", params
    code, body = api.call("GET", f"{WS}/experiments/other/runs?{urlencode({'status': 'Running', 'page_token': token})}")
    assert code == 400 and body["field"] == "page_token"
    # the genuine token still works
    assert len(search(api, max_results=7, status="Running", page_token=token)["runs"]) == 2


def test_bad_search_parameters_are_400(api):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    for params, field in [
        ({"order_by": "name"}, "order_by"),
        ({"order_by": "created sideways"}, "order_by"),
        ({"order_by": "metrics.acc desc asc"}, "order_by"),
        ({"order_by": "tags.team"}, "order_by"),
        ({"status": "Done"}, "status"),
        ({"metric": "acc~0.5"}, "metric"),
        ({"metric": "acc>high"}, "metric"),
        ({"metric": ">0.5"}, "metric"),
        ({"max_results": 0}, "max_results"),
        ({"max_results": 1001}, "max_results"),
        ({"max_results": "seven"}, "max_results"),
    ]:
        code, body = api.call("GET", f"{SEARCH}?{urlencode(params)}")
        assert code == 400, (params, body)
        assert body["field"] == field, (params, body)


def test_search_of_an_unknown_experiment_is_empty(api):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    assert search(api) == {"runs": [], "total": 0, "next_page_token": None}


def test_top_level_leaves_child_runs_out(api, runs):
    child = api.ok("POST", f"{WS}/runs", {"parent_id": runs[2], "status": "Running"})  # runs[2] is Running
    everything = api.ok("GET", SEARCH + "?max_results=100")
    top = api.ok("GET", SEARCH + "?max_results=100&top_level=true")
    assert child["id"] in [r["id"] for r in everything["runs"]]
    assert child["id"] not in [r["id"] for r in top["runs"]]
    assert top["total"] == everything["total"] - 1 == len(runs)
