"""Metrics: every type round-trips, batches are cheap and idempotent, history pages cleanly."""
from __future__ import annotations

import json
import math

import pytest

from tests.server.api.helpers import all_at_once, every_page

WS = "/v1/workspaces/ws"


@pytest.fixture
def run(api) -> str:
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    return api.ok("POST", f"{WS}/runs", {"experiment": "exp", "status": "Running"})["id"]


def log(api, run_id: str, *metrics: dict, batch_id: str | None = None):
    body = {"metrics": list(metrics), **({"batch_id": batch_id} if batch_id else {})}
    return api.call("POST", f"{WS}/runs/{run_id}/metrics", body)


def history(api, run_id: str, name: str, **params) -> dict:
    from urllib.parse import urlencode

    return api.ok("GET", f"{WS}/runs/{run_id}/metric-history?" + urlencode({"name": name, **params}))


def summary(api, run_id: str) -> dict:
    return api.ok("GET", f"{WS}/runs/{run_id}/metrics")["metrics"]


def test_every_type_round_trips(api, run):
    # Given one entry of each type (the image path comes from the image upload)
    image = api.ok("POST", f"{WS}/runs/{run}/images", {"name": "confusion", "extension": "png"})
    assert image["path"].startswith("images/") and image["path"].endswith(".png") and image["url"]
    entries = [
        {"name": "loss", "type": "scalar", "values": [1.5, 0.75, 0.5], "steps": [0, 1, 2],
         "timestamps": [1000.0, 1001.0, 1002.5]},
        {"name": "layer sizes", "type": "list", "values": [[1, 2, 3], ["a", None, 2.5]]},
        {"name": "eval/row", "type": "row", "values": [{"acc": 0.9, "split": "test", "ok": True}]},
        {"name": "pr.table", "type": "table", "values": [{"precision": [0.5, 0.7], "recall": [0.9, 0.6]}]},
        {"name": "confusion", "type": "image", "values": [{"path": image["path"], "description": "epoch 3"}]},
    ]

    # When they are logged in one request
    code, result = log(api, run, *entries)
    assert code == 200, result
    assert result["points"] == 8 and result["metrics"] == 5 and result["batch_id"]

    # Then the summary names each type, with the latest value of scalars
    assert summary(api, run) == {
        "loss": {"type": "scalar", "latest": 0.5},
        "layer sizes": {"type": "list", "latest": None},
        "eval/row": {"type": "row", "latest": None},
        "pr.table": {"type": "table", "latest": None},
        "confusion": {"type": "image", "latest": None},
    }
    assert api.ok("GET", f"{WS}/runs/{run}")["metric_types"]["pr.table"] == "table"

    # And the history gives every value back as sent
    for entry in entries:
        got = history(api, run, entry["name"])
        assert got["name"] == entry["name"] and got["type"] == entry["type"]
        assert got["values"] == entry["values"]
        assert got["next_page_token"] is None
        assert got["steps"] == entry.get("steps", [None] * len(entry["values"]))
        assert len(got["timestamps"]) == len(entry["values"])
    assert history(api, run, "loss")["timestamps"] == [1000.0, 1001.0, 1002.5]


def test_default_type_is_scalar_and_ints_are_numbers(api, run):
    assert log(api, run, {"name": "epoch", "values": [1, 2, 3]})[0] == 200
    got = history(api, run, "epoch")
    assert got["type"] == "scalar" and got["values"] == [1.0, 2.0, 3.0]
    assert summary(api, run)["epoch"]["latest"] == 3


def test_non_finite_values_round_trip_as_strings(api, run):
    code, body = log(api, run, {"name": "odd", "values": ["NaN", "Infinity", "-Infinity", 1.0, "nan", "-inf"]})
    assert code == 200, body
    assert history(api, run, "odd")["values"] == ["NaN", "Infinity", "-Infinity", 1.0, "NaN", "-Infinity"]
    assert summary(api, run)["odd"] == {"type": "scalar", "latest": "-Infinity"}
    assert api.ok("GET", f"{WS}/runs/{run}")["metrics"] == {"odd": "-Infinity"}

    # the JSON literals some clients send are read the same way
    raw = b'{"metrics": [{"name": "lit", "values": [NaN, Infinity, -Infinity]}]}'
    code, body = api.call("POST", f"{WS}/runs/{run}/metrics", raw=raw)
    assert code == 200, body
    assert history(api, run, "lit")["values"] == ["NaN", "Infinity", "-Infinity"]
    latest = summary(api, run)["lit"]["latest"]
    assert latest == "-Infinity"

    # and a latest NaN survives too
    log(api, run, {"name": "nan-last", "values": [1, "NaN"]})
    assert summary(api, run)["nan-last"]["latest"] == "NaN"


def test_invalid_entries_name_the_field(api, run):
    log(api, run, {"name": "ok", "values": [1.0]})
    cases = [
        ({"name": "x", "type": "histogram", "values": [1]}, "metrics[0].type"),
        ({"name": "x", "type": None, "values": [1]}, "metrics[0].type"),
        ({"name": "n" * 256, "values": [1]}, "metrics[0].name"),
        ({"name": "", "values": [1]}, "metrics[0].name"),
        ({"name": "tab\there", "values": [1]}, "metrics[0].name"),
        ({"name": 7, "values": [1]}, "metrics[0].name"),
        ({"name": "x", "values": []}, "metrics[0].values"),
        ({"name": "x", "values": [1, "one"]}, "metrics[0].values[1]"),
        ({"name": "x", "values": [1, True]}, "metrics[0].values[1]"),
        ({"name": "x", "values": [None]}, "metrics[0].values[0]"),
        ({"name": "x", "type": "list", "values": [5]}, "metrics[0].values[0]"),
        ({"name": "x", "type": "row", "values": [{"a": [1]}]}, "metrics[0].values[0]"),
        ({"name": "x", "type": "table", "values": [{"a": 1}]}, "metrics[0].values[0]"),
        ({"name": "x", "type": "image", "values": [{"path": "../etc/passwd"}]}, "metrics[0].values[0]"),
        ({"name": "x", "values": [1, 2], "steps": [0]}, "metrics[0].steps"),
        ({"name": "x", "values": [1], "steps": [-1]}, "metrics[0].steps"),
        ({"name": "x", "values": [1], "steps": ["0"]}, "metrics[0].steps"),
        ({"name": "x", "values": [1], "timestamps": ["noon"]}, "metrics[0].timestamps"),
        ({"name": "x", "values": [1], "rank": -1}, "metrics[0].rank"),
        ({"name": "x", "values": [1], "rank": "1"}, "metrics[0].rank"),
        ({"name": "x", "values": [1], "rank": True}, "metrics[0].rank"),
        ({"name": "x", "values": [1], "rank": 4096}, "metrics[0].rank"),
    ]
    for entry, field in cases:
        code, body = log(api, run, {"name": "fine", "values": [2.0]}, entry)
        field = field.replace("metrics[0]", "metrics[1]")
        assert code == 400, (entry, body)
        assert body["field"] == field, (entry, body)
    code, body = api.call("POST", f"{WS}/runs/{run}/metrics", {"metrics": [{"name": "x", "values": [1], "unit": "s"}]})
    assert code == 400 and body["field"] == "metrics.0.unit"
    code, body = log(api, run, {"name": "x", "values": [1]}, batch_id="has space")
    assert code == 400 and body["field"] == "batch_id"
    # nothing of the refused requests was stored
    assert summary(api, run) == {"ok": {"type": "scalar", "latest": 1.0}}


def test_a_metric_keeps_its_type(api, run):
    log(api, run, {"name": "m", "values": [1.0]})
    code, body = log(api, run, {"name": "other", "values": [1.0]}, {"name": "m", "type": "list", "values": [[1]]})
    assert code == 409, body
    assert body["field"] == "metrics"
    code, body = log(api, run, {"name": "m", "values": [1.0]}, {"name": "m", "type": "row", "values": [{"a": 1}]})
    assert code == 400 and body["field"] == "metrics[1].type"
    assert summary(api, run) == {"m": {"type": "scalar", "latest": 1.0}}
    assert history(api, run, "m")["values"] == [1.0]


def test_completed_run_takes_no_metrics(api, run, services):
    log(api, run, {"name": "m", "values": [1.0]})
    api.ok("POST", f"{WS}/runs/{run}/status", {"status": "Completed"})
    writes = services.ctx.table.writes
    code, body = log(api, run, {"name": "m", "values": [2.0]}, {"name": "new", "values": [3.0]})
    assert code == 409, body
    assert services.ctx.table.writes == writes
    assert summary(api, run) == {"m": {"type": "scalar", "latest": 1.0}}
    assert history(api, run, "m")["values"] == [1.0]
    # a run not started yet does take metrics
    fresh = api.ok("POST", f"{WS}/runs", {"experiment": "exp"})["id"]
    assert log(api, fresh, {"name": "m", "values": [1.0]})[0] == 200


def test_a_big_batch_is_cheap_and_idempotent(api, run, services):
    # Given one request of 10,000 points over 10 metrics
    metrics = [{"name": f"m{i}", "values": [i + j / 1000 for j in range(1000)], "steps": list(range(1000))}
               for i in range(10)]
    writes = services.ctx.table.writes

    # When it is sent
    code, body = log(api, run, *metrics, batch_id="batch-0001")
    assert code == 200, body
    assert body["points"] == 10_000 and body["metrics"] == 10

    # Then it took a handful of table writes, not thousands
    used = services.ctx.table.writes - writes
    assert 0 < used < 50, used

    # When the client retries the very same batch
    code, again = log(api, run, *metrics, batch_id="batch-0001")
    assert code == 200 and again["points"] == 10_000

    # Then nothing is doubled
    for i in (0, 9):
        got = history(api, run, f"m{i}")
        assert got["values"] == metrics[i]["values"]
        assert got["steps"] == list(range(1000))
    assert summary(api, run)["m9"]["latest"] == 9.999

    # And a new batch id adds its points
    log(api, run, {"name": "m0", "values": [42.0]}, batch_id="batch-0002")
    assert len(history(api, run, "m0")["values"]) == 1001
    assert summary(api, run)["m0"]["latest"] == 42.0


def test_history_pages_return_every_point_once_in_order(api, run):
    # Given 5 batches of 7 points, logged in order
    for batch in range(5):
        code, _ = log(api, run, {"name": "loss", "values": [batch * 7 + i for i in range(7)],
                                 "steps": [batch * 7 + i for i in range(7)]}, batch_id=f"b{batch:03d}")
        assert code == 200
    expected = list(range(35))

    for size in (3, 7, 100):
        # When read in pages of `size`
        values, steps, token, pages = [], [], None, 0
        while True:
            params = {"max_results": size, **({"page_token": token} if token else {})}
            page = history(api, run, "loss", **params)
            assert len(page["values"]) <= size, (size, len(page["values"]))
            assert len(page["values"]) == len(page["steps"]) == len(page["timestamps"])
            values += page["values"]
            steps += page["steps"]
            pages += 1
            token = page["next_page_token"]
            if not token:
                break
            assert pages < 100

        # Then every point comes back exactly once, in order
        assert values == expected, size
        assert steps == expected
        assert pages >= math.ceil(35 / size)


def test_history_errors(api, run):
    log(api, run, {"name": "m", "values": [1.0]})
    code, body = api.call("GET", f"{WS}/runs/{run}/metric-history")
    assert code == 400 and body["field"] == "name"
    code, body = api.call("GET", f"{WS}/runs/{run}/metric-history?name=absent")
    assert code == 400 and body["field"] == "name"
    for params, field in [("max_results=0", "max_results"), ("max_results=ten", "max_results"),
                          ("max_results=100001", "max_results"), ("page_token=%25%25%25", "page_token"),
                          ("page_token=WzFd", "page_token")]:
        code, body = api.call("GET", f"{WS}/runs/{run}/metric-history?name=m&{params}")
        assert code == 400, (params, body)
        assert body["field"] == field


def test_latest_value_is_kept_on_the_run(api, run):
    log(api, run, {"name": "acc", "values": [0.1, 0.2]})
    log(api, run, {"name": "acc", "values": [0.3]}, {"name": "loss", "values": [2.0]})
    shown = api.ok("GET", f"{WS}/runs/{run}")
    assert shown["metrics"] == {"acc": 0.3, "loss": 2.0}
    assert shown["metric_types"] == {"acc": "scalar", "loss": "scalar"}
    # entries of one name within a request are merged in order
    log(api, run, {"name": "acc", "values": [0.4]}, {"name": "acc", "values": [0.5]})
    assert api.ok("GET", f"{WS}/runs/{run}")["metrics"]["acc"] == 0.5
    assert history(api, run, "acc")["values"][-2:] == [0.4, 0.5]


def test_odd_metric_names(api, run):
    names = ["a.b.c", "with space", "slash/and:colon", "ünïcode ✓", "#hash", "n" * 255, "$float"]
    code, body = log(api, run, *[{"name": n, "values": [float(i)]} for i, n in enumerate(names)])
    assert code == 200, body
    assert set(summary(api, run)) == set(names)
    for i, name in enumerate(names):
        assert history(api, run, name)["values"] == [float(i)]
    assert json.loads(json.dumps(api.ok("GET", f"{WS}/runs/{run}")["metrics"])) == {n: i for i, n in enumerate(names)}


def test_concurrent_logging_keeps_every_point(api, run, services):
    # Given several threads logging to one run at once, through the services
    threads_count, batches, points = 4, 2, 20

    def work(n: int) -> None:
        for b in range(batches):
            values = [float(n * 1000 + b * 100 + i) for i in range(points)]
            services.metrics.log("ws", run, [{"name": "shared", "values": values},
                                             {"name": f"own{n}", "values": values}], f"w{n}-b{b}")

    assert all_at_once(work, threads_count) == []

    # Then every point of every thread is stored, once
    shared = history(api, run, "shared")["values"]
    expected = sorted(float(n * 1000 + b * 100 + i)
                      for n in range(threads_count) for b in range(batches) for i in range(points))
    assert sorted(shared) == expected
    for n in range(threads_count):
        assert len(history(api, run, f"own{n}")["values"]) == batches * points
    assert set(summary(api, run)) == {"shared", *(f"own{n}" for n in range(threads_count))}


def test_history_pages_inside_big_chunks(api, run):
    # Given one series long enough to be stored as several chunks
    values = [float(i) for i in range(12_000)]
    assert log(api, run, {"name": "long", "values": values, "steps": list(range(12_000))})[0] == 200

    for size in (12_000, 5_000, 2_999):
        pages = every_page(lambda token: history(api, run, "long", max_results=size,
                                                 **({"page_token": token} if token else {})))
        assert all(len(page["values"]) <= size for page in pages)
        assert all(page["steps"] == [int(v) for v in page["values"]] for page in pages)
        assert [v for page in pages for v in page["values"]] == values, size


def test_history_reads_past_many_chunks(api, run, services):
    # Given more chunks than one table page holds
    for batch in range(51):
        services.metrics.log("ws", run, [{"name": "m", "values": [batch * 2.0, batch * 2.0 + 1]}], f"b{batch:03d}")
    expected = [float(i) for i in range(102)]
    assert history(api, run, "m")["values"] == expected
    pages = every_page(lambda token: history(api, run, "m", max_results=40, **({"page_token": token} if token else {})))
    assert [v for page in pages for v in page["values"]] == expected


def test_history_token_of_another_metric_is_400(api, run):
    log(api, run, {"name": "a", "values": [1.0, 2.0]}, {"name": "b", "values": [1.0, 2.0]}, batch_id="b1")
    log(api, run, {"name": "a", "values": [3.0]}, {"name": "b", "values": [3.0]}, batch_id="b2")
    token = history(api, run, "a", max_results=2)["next_page_token"]
    assert token
    assert history(api, run, "a", max_results=2, page_token=token)["values"] == [3.0]
    code, body = api.call("GET", f"{WS}/runs/{run}/metric-history?name=b&page_token={token}")
    assert code == 400 and body["field"] == "page_token"


def test_the_ranks_of_a_distributed_run_share_a_series_and_each_point_keeps_its_rank(api, run):
    # Given one name logged by rank 1 and rank 0 in one batch, by rank 2 in another, and once without a rank
    code, result = log(api, run, {"name": "loss", "values": [0.9, 0.8], "rank": 1},
                       {"name": "loss", "values": [0.7], "rank": 0}, batch_id="b1")
    assert code == 200 and result["points"] == 3 and result["metrics"] == 1
    log(api, run, {"name": "loss", "values": [0.6], "rank": 2}, batch_id="b2")
    log(api, run, {"name": "loss", "values": [0.5]}, batch_id="b3")

    # Then the history holds every point once, with its rank
    got = history(api, run, "loss")
    assert sorted(zip(got["values"], got["ranks"])) == [(0.5, None), (0.6, 2), (0.7, 0), (0.8, 1), (0.9, 1)]
    assert summary(api, run) == {"loss": {"type": "scalar", "latest": 0.5}}

    # And the same name sent as two types by two ranks is refused
    code, body = log(api, run, {"name": "acc", "values": [1.0], "rank": 0},
                     {"name": "acc", "type": "list", "values": [[1]], "rank": 1})
    assert code == 400 and body["field"] == "metrics[1].type"
