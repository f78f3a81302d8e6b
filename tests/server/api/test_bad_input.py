"""Malformed requests: every one is a 4xx JSON error naming the offending field, never a 500, and changes nothing."""
from __future__ import annotations

import json

import pytest

WS = "/v1/workspaces/ws"
BIG = 6 * 1024 * 1024 + 1


@pytest.fixture
def world(api, services, user_token):
    """A workspace with a member, a running run holding a tag, a property, a metric and a log line."""
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    user_token("bob")
    api.ok("POST", f"{WS}/members", {"user": "bob", "role": "reader"})
    run = api.ok("POST", f"{WS}/runs", {"experiment": "exp", "status": "Running", "tags": {"t": "1"},
                                        "properties": {"p": "1"}})
    api.ok("POST", f"{WS}/runs/{run['id']}/metrics", {"metrics": [{"name": "m", "values": [1.0]}]})
    api.ok("POST", f"{WS}/runs/{run['id']}/logs/stdout", {"text": "hello"})
    return run["id"]


def snapshot(api, run_id: str) -> dict:
    """Everything a malformed request could have touched."""
    base = f"{WS}/runs/{run_id}"
    return {
        "workspaces": api.ok("GET", "/v1/workspaces"),
        "workspace": api.ok("GET", WS),
        "members": api.ok("GET", f"{WS}/members"),
        "users": api.ok("GET", "/v1/users"),
        "tokens": api.ok("GET", "/v1/users/bob/tokens"),
        "experiments": api.ok("GET", f"{WS}/experiments"),
        "run": api.ok("GET", base),
        "metrics": api.ok("GET", f"{base}/metrics"),
        "history": api.ok("GET", f"{base}/metric-history?name=m"),
        "logs": api.ok("GET", f"{base}/logs"),
        "log": api.ok("GET", f"{base}/logs/stdout"),
        "outputs": api.ok("GET", f"{base}/outputs"),
    }


def expect_refused(api, services, run_id: str, cases: list[tuple], status: int = 400) -> None:
    """Each case is (method, path, body-or-raw-bytes, field). Not one of them may write anything."""
    before, writes = snapshot(api, run_id), services.ctx.table.writes
    for method, path, payload, field in cases:
        path = path.replace("{run}", run_id)
        if isinstance(payload, bytes):
            code, body = api.call(method, path, raw=payload)
        else:
            code, body = api.call(method, path, payload)
        assert code == status, (method, path, str(payload)[:200], body)
        assert body["code"] and body["message"]
        assert body.get("field") == field, (method, path, str(payload)[:200], body)
    assert services.ctx.table.writes == writes
    assert snapshot(api, run_id) == before


RUN = WS + "/runs/{run}"
# routes that take a body, with a valid body for each
ROUTES = [
    ("POST", "/v1/users", {"name": "carol"}),
    ("POST", "/v1/users/bob/tokens", {"name": "ci"}),
    ("POST", "/v1/workspaces", {"name": "other"}),
    ("POST", f"{WS}/members", {"user": "bob", "role": "owner"}),
    ("POST", f"{WS}/runs", {"experiment": "exp"}),
    ("PATCH", f"{RUN}/tags", {"tags": {"a": "b"}}),
    ("POST", f"{RUN}/properties", {"properties": {"a": "b"}}),
    ("POST", f"{RUN}/status", {"status": "Completed"}),
    ("POST", f"{RUN}/metrics", {"metrics": [{"name": "m", "values": [2.0]}]}),
    ("POST", f"{RUN}/logs/stdout", {"text": "more"}),
    ("POST", f"{RUN}/outputs/uploads", {"paths": ["a.txt"]}),
    ("POST", f"{RUN}/images", {"name": "plot"}),
]


def test_invalid_json(api, services, world):
    bodies = [b"{not json", b"{\"name\": ", b"\xff\xfe\x00", b"  ", b'{"a": 1} trailing', b"[" * 100_000,
              b'{"a":' * 50_000, b"null", b"[1, 2]", b'"text"', b"42"]
    # every body on two routes, a few on every route
    cases = [(m, p, raw, "body") for m, p, _ in (ROUTES[2], ROUTES[8]) for raw in bodies]
    cases += [(m, p, raw, "body") for m, p, _ in ROUTES for raw in (b"{not json", b"[" * 100_000)]
    expect_refused(api, services, world, cases)


def test_unknown_fields(api, services, world):
    cases = [(m, p, {**body, "surprise": 1}, "surprise") for m, p, body in ROUTES]
    cases += [
        ("POST", f"{RUN}/metrics", {"metrics": [{"name": "m", "values": [1], "unit": "s"}]}, "metrics.0.unit"),
        ("POST", f"{RUN}/status", {"status": "Failed", "reason": "x"}, "reason"),
    ]
    expect_refused(api, services, world, cases)


def test_missing_fields(api, services, world):
    expect_refused(api, services, world, [
        ("POST", "/v1/users", {}, "name"),
        ("POST", "/v1/workspaces", {"description": "no name"}, "name"),
        ("POST", f"{WS}/members", {"user": "bob"}, "role"),
        ("POST", f"{WS}/members", {"role": "owner"}, "user"),
        ("POST", f"{WS}/runs", {}, "experiment"),
        ("POST", f"{RUN}/properties", {}, "properties"),
        ("POST", f"{RUN}/status", {}, "status"),
        ("POST", f"{RUN}/status", b"", "status"),
        ("POST", f"{RUN}/metrics", {}, "metrics"),
        ("POST", f"{RUN}/metrics", {"metrics": [{"values": [1]}]}, "metrics.0.name"),
        ("POST", f"{RUN}/metrics", {"metrics": [{"name": "m"}]}, "metrics.0.values"),
        ("POST", f"{RUN}/logs/stdout", {}, "text"),
        ("POST", f"{RUN}/outputs/uploads", {}, "paths"),
        ("POST", f"{RUN}/images", {}, "name"),
        ("PATCH", f"{RUN}/tags", {}, "tags"),
    ])


def test_wrong_json_types(api, services, world):
    expect_refused(api, services, world, [
        ("POST", "/v1/users", {"name": 5}, "name"),
        ("POST", "/v1/users", {"name": "carol", "is_admin": "yes"}, "is_admin"),
        ("POST", "/v1/users", {"name": "carol", "is_admin": 1}, "is_admin"),
        ("POST", "/v1/users/bob/tokens", {"name": ["ci"]}, "name"),
        ("POST", "/v1/workspaces", {"name": None}, "name"),
        ("POST", "/v1/workspaces", {"name": "other", "description": 3}, "description"),
        ("POST", f"{WS}/members", {"user": "bob", "role": 3}, "role"),
        ("POST", f"{WS}/members", {"user": "bob", "role": "boss"}, "role"),
        ("POST", f"{WS}/runs", {"experiment": 7}, "experiment"),
        ("POST", f"{WS}/runs", {"experiment": "exp", "tags": ["a"]}, "tags"),
        ("POST", f"{WS}/runs", {"experiment": "exp", "tags": {"a": 1}}, "tags.a"),
        ("POST", f"{WS}/runs", {"experiment": "exp", "properties": {"a": None}}, "properties.a"),
        ("POST", f"{WS}/runs", {"experiment": "exp", "display_name": 1}, "display_name"),
        ("POST", f"{WS}/runs", {"experiment": "exp", "parent_id": 12}, "parent_id"),
        ("PATCH", f"{RUN}/tags", {"tags": "a=b"}, "tags"),
        ("PATCH", f"{RUN}/tags", {"remove": "t"}, "remove"),
        ("PATCH", f"{RUN}/tags", {"remove": [1]}, "remove.0"),
        ("POST", f"{RUN}/properties", {"properties": {"q": 1.5}}, "properties.q"),
        ("POST", f"{RUN}/status", {"status": True}, "status"),
        ("POST", f"{RUN}/status", {"status": "Failed", "error": "boom"}, "error"),
        ("POST", f"{RUN}/status", {"status": "Failed", "error": {"n": 10**40}}, "error"),
        ("POST", f"{RUN}/status", {"status": "Failed", "error": {"big": "x" * 40_000}}, "error"),
        ("POST", f"{RUN}/status", {"status": "Failed", "error": json.loads('{"a":' * 40 + "1" + "}" * 40)}, "error"),
        ("POST", f"{RUN}/metrics", {"metrics": {"name": "m"}}, "metrics"),
        ("POST", f"{RUN}/metrics", {"metrics": [{"name": "m", "values": 1.0}]}, "metrics.0.values"),
        ("POST", f"{RUN}/metrics", {"metrics": [{"name": "m", "values": ["x"]}]}, "metrics[0].values[0]"),
        ("POST", f"{RUN}/metrics", {"metrics": [{"name": "m", "values": [1]}], "batch_id": 5}, "batch_id"),
        ("POST", f"{RUN}/logs/stdout", {"text": ["x"]}, "text"),
        ("POST", f"{RUN}/logs/stdout", {"text": None}, "text"),
        ("POST", f"{RUN}/outputs/uploads", {"paths": "a.txt"}, "paths"),
        ("POST", f"{RUN}/outputs/uploads", {"paths": [["a.txt"]]}, "paths.0"),
        ("POST", f"{RUN}/images", {"name": "plot", "extension": 3}, "extension"),
    ])


def test_over_long_values(api, services, world):
    expect_refused(api, services, world, [
        ("POST", "/v1/users", {"name": "u" * 65}, "name"),
        ("POST", "/v1/users/bob/tokens", {"name": "t" * 129}, "name"),
        ("POST", "/v1/workspaces", {"name": "w" * 33}, "name"),
        ("POST", "/v1/workspaces", {"name": "w" * 65}, "name"),
        ("POST", "/v1/workspaces", {"name": "other", "description": "d" * 5001}, "description"),
        ("POST", f"{WS}/members", {"user": "u" * 65, "role": "reader"}, "user"),
        ("POST", f"{WS}/runs", {"experiment": "e" * 256}, "experiment"),
        ("POST", f"{WS}/runs", {"experiment": "exp", "display_name": "d" * 256}, "display_name"),
        ("POST", f"{WS}/runs", {"experiment": "exp", "parent_id": "p" * 65}, "parent_id"),
        ("POST", f"{WS}/runs", {"experiment": "exp", "tags": {"k": "v" * 5001}}, "tags.k"),
        ("PATCH", f"{RUN}/tags", {"remove": ["k"] * 201}, "remove"),
        ("POST", f"{RUN}/status", {"status": "S" * 33}, "status"),
        ("POST", f"{RUN}/metrics", {"metrics": [{"name": "n" * 256, "values": [1]}]}, "metrics[0].name"),
        ("POST", f"{RUN}/metrics", {"metrics": [{"name": "m", "values": [1]}], "batch_id": "b" * 41}, "batch_id"),
        ("POST", f"{RUN}/metrics", {"metrics": [{"name": "m", "values": [1]}] * 1001}, "metrics"),
        ("POST", f"{RUN}/logs/{'s' * 129}", {"text": "x"}, "stream"),
        ("POST", f"{RUN}/outputs/uploads", {"paths": ["p" * 1025]}, "paths[0]"),
        ("POST", f"{RUN}/images", {"name": "n" * 256}, "name"),
        ("POST", f"{RUN}/images", {"name": "plot", "extension": "e" * 9}, "extension"),
    ])


def test_oversized_bodies_are_413(api, services, world):
    padding = json.dumps({"name": "x", "description": "d" * BIG}).encode()
    assert len(padding) > 6 * 1024 * 1024
    expect_refused(api, services, world, [
        ("POST", "/v1/workspaces", padding, "body"),
        ("POST", f"{WS}/runs", padding, "body"),
        ("POST", f"{RUN}/metrics", json.dumps({"metrics": [{"name": "m", "values": [0.123456789] * 600_000}]}).encode(),
         "body"),
        ("POST", f"{RUN}/logs/stdout", json.dumps({"text": "x" * BIG}).encode(), "body"),
        ("POST", f"{RUN}/logs/stdout", b"{" * BIG, "body"),
    ], status=413)


def test_bad_query_parameters(api, services, world):
    cases = []
    for value in ["abc", "1.5", "", "0", "-1", "1e3", "99999999999999999999"]:
        cases.append(("GET", f"{WS}/experiments?max_results={value}", None, "max_results"))
    for path in [f"{WS}/experiments/exp/runs", f"{RUN}/children", f"{RUN}/outputs", f"{RUN}/metric-history?name=m"]:
        joiner = "&" if "?" in path else "?"
        for value in ["abc", "1.5", "0"]:
            cases.append(("GET", f"{path}{joiner}max_results={value}", None, "max_results"))
    for query, field in [("offset=x", "offset"), ("offset=-5", "offset"), ("offset=0x10", "offset"),
                         ("max_chars=many", "max_chars"), ("max_chars=0", "max_chars")]:
        cases.append(("GET", f"{RUN}/logs/stdout?{query}", None, field))
    cases.append(("DELETE", f"{WS}?force=sure", None, "force"))
    cases.append(("GET", f"{RUN}/metric-history", None, "name"))
    cases.append(("GET", f"{RUN}/metric-history?name=", None, "name"))
    expect_refused(api, services, world, cases)


def test_a_method_a_route_lacks_is_405_in_the_api_error_shape(api):
    code, body = api.call("PUT", "/v1/workspaces")
    assert code == 405 and body["code"] == "MethodNotAllowed" and "PUT" in body["message"]


def test_wrong_content_type_is_refused(api, services, world):
    before = snapshot(api, world)
    code, body = api.call("POST", "/v1/workspaces", {"name": "other"}, headers={"Content-Type": "text/plain"})
    assert code == 415 and body["field"] == "Content-Type" and "text/plain" in body["message"]
    code, body = api.call("POST", f"{WS}/runs/{world}/logs/stdout", {"text": "x"},
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 415
    assert snapshot(api, world) == before
    # a charset parameter is fine
    code, _ = api.call("POST", "/v1/workspaces", {"name": "other"},
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert code == 201


def test_bad_path_values(api, services, world):
    expect_refused(api, services, world, [
        ("GET", f"{WS}/experiments/bad!name", None, "experiment"),
        ("POST", f"{RUN}/logs/bad!stream", {"text": "x"}, "stream"),
        ("GET", f"{RUN}/logs/.hidden", None, "stream"),
    ])
    before = snapshot(api, world)
    for method, path, body in [("GET", f"{WS}/runs/not-a-run", None),
                               ("POST", f"{WS}/runs/{'x' * 100}/status", {"status": "Completed"}),
                               ("GET", "/v1/workspaces/NOT_VALID", None),
                               ("DELETE", "/v1/users/bob/tokens/nope", None)]:
        code, reply = api.call(method, path, body)
        assert code == 404, (path, reply)
    assert snapshot(api, world) == before


UNSAFE_NAMES = ["../x", "/etc/passwd", "a\\b", " ", " loss", "loss ", "a\u202eb", "a\u200fb", "tab\there"]


def test_one_name_policy_refuses_unsafe_metric_names_and_file_paths(api, services, world):
    # Metric names, output paths and model file paths are checked by one policy (nimbus/naming.py)
    cases = [("POST", f"{RUN}/metrics", {"metrics": [{"name": name, "values": [1.0]}]}, "metrics[0].name")
             for name in UNSAFE_NAMES]
    cases += [("POST", f"{RUN}/outputs/uploads", {"paths": [path]}, "paths[0]")
              for path in ["../x", "/etc/passwd", " ", "dir/ name", "a\u202eb.txt", "a\\b"]]
    cases += [("POST", f"{WS}/models/m/uploads", {"files": [{"path": path, "size": 1}]}, "files[0].path")
              for path in [" ", "a\u202eb.pkl", "../m.pkl"]]
    expect_refused(api, services, world, cases)


def test_names_that_follow_the_policy_are_taken(api, world):
    for name in ("train/loss", "accuracy", "précision", "top 5"):
        api.ok("POST", f"{WS}/runs/{world}/metrics", {"metrics": [{"name": name, "values": [1.0]}]})


def test_a_whole_number_written_with_a_fraction_part_is_an_integer(api, services, world):
    """JSON, and so the OpenAPI document's "integer", has one number type: 1.0 is 1, and 1.5 is refused."""
    queued = api.ok("POST", f"{WS}/runs", {"experiment": "exp", "status": "Queued"})["id"]
    code, body = api.call("POST", f"{WS}/runs/{queued}/status", {"status": "Running", "runner_id": "runner-0001",
                                                                 "attempt": 1.5})
    assert (code, body["field"]) == (400, "attempt")
    run = api.ok("POST", f"{WS}/runs/{queued}/status", {"status": "Running", "runner_id": "runner-0001",
                                                        "attempt": 1.0})
    assert run["status"] == "Running"
