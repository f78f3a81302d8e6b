"""Run logs: streams appended in chunks and read from any character offset."""
from __future__ import annotations


import pytest

from tests.server.api.helpers import all_at_once

WS = "/v1/workspaces/ws"


@pytest.fixture
def run(api) -> str:
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    return api.ok("POST", f"{WS}/runs", {"experiment": "exp", "status": "Running"})["id"]


def append(api, run_id: str, stream: str, text: str):
    return api.call("POST", f"{WS}/runs/{run_id}/logs/{stream}", {"text": text})


def read(api, run_id: str, stream: str, **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return api.ok("GET", f"{WS}/runs/{run_id}/logs/{stream}" + (f"?{query}" if query else ""))


def read_all(api, run_id: str, stream: str, max_chars: int) -> str:
    parts, offset = [], 0
    while True:
        page = read(api, run_id, stream, offset=offset, max_chars=max_chars)
        assert len(page["text"]) <= max_chars
        assert page["offset"] == offset and page["next_offset"] == offset + len(page["text"])
        if not page["text"]:
            return "".join(parts)
        parts.append(page["text"])
        offset = page["next_offset"]


def test_append_and_read_from_offsets(api, run):
    code, first = append(api, run, "stdout", "hello\n")
    assert code == 200 and first == {"stream": "stdout", "offset": 0, "next_offset": 6}
    code, second = append(api, run, "stdout", "wörld ✓\n")
    assert second == {"stream": "stdout", "offset": 6, "next_offset": 14}

    whole = read(api, run, "stdout")
    assert whole["text"] == "hello\nwörld ✓\n"
    assert whole["offset"] == 0 and whole["next_offset"] == 14
    assert whole["run_status"] == "Running" and whole["run_ended"] is False

    # from a chunk boundary, from the middle of a chunk, from the end and beyond it
    assert read(api, run, "stdout", offset=6)["text"] == "wörld ✓\n"
    middle = read(api, run, "stdout", offset=3)
    assert middle["text"] == "lo\nwörld ✓\n" and middle["next_offset"] == 14
    assert read(api, run, "stdout", offset=9)["text"] == "ld ✓\n"
    end = read(api, run, "stdout", offset=14)
    assert (end["text"], end["offset"], end["next_offset"]) == ("", 14, 14)
    assert read(api, run, "stdout", offset=500)["text"] == ""

    # a tail picks up what is appended later
    append(api, run, "stdout", "more")
    assert read(api, run, "stdout", offset=14)["text"] == "more"


def test_max_chars_pages_through_a_stream(api, run):
    lines = [f"line {i}: " + "x" * i + "\n" for i in range(6)]
    for line in lines:
        assert append(api, run, "train", line)[0] == 200
    text = "".join(lines)
    for size in (7, 16, len(text)):
        assert read_all(api, run, "train", size) == text
    assert read(api, run, "train", offset=3, max_chars=1)["text"] == text[3]
    page = read(api, run, "train", offset=2, max_chars=10)
    assert page["text"] == text[2:12] and page["next_offset"] == 12


def test_streams_are_listed_with_sizes(api, run):
    assert api.ok("GET", f"{WS}/runs/{run}/logs")["streams"] == []
    writes = {"stdout": ["a" * 10, "b" * 5], "stderr": ["oops\n"], "driver.log": ["x"], "out-2": ["yy"],
              "out": ["zzz"]}
    for stream, texts in writes.items():
        for text in texts:
            append(api, run, stream, text)
    streams = api.ok("GET", f"{WS}/runs/{run}/logs")["streams"]
    assert {s["stream"]: s["size"] for s in streams} == {name: sum(map(len, t)) for name, t in writes.items()}
    assert all(s["created"] for s in streams)
    # streams whose names share a prefix stay apart
    assert read(api, run, "out")["text"] == "zzz"
    assert read(api, run, "out-2")["text"] == "yy"
    assert read(api, run, "out", offset=1)["text"] == "zz"
    assert read(api, run, "nothing-yet")["text"] == ""


def test_invalid_log_requests(api, run):
    append(api, run, "stdout", "kept")
    for stream in ["-lead", ".hidden", "bad!name", "x" * 129]:
        code, body = append(api, run, stream, "x")
        assert code == 400 and body["field"] == "stream", (stream, body)
        code, body = api.call("GET", f"{WS}/runs/{run}/logs/{stream}")
        assert code == 400 and body["field"] == "stream"
    code, body = api.call("POST", f"{WS}/runs/{run}/logs/stdout", {"text": ""})
    assert code == 400 and body["field"] == "text"
    code, body = api.call("POST", f"{WS}/runs/{run}/logs/stdout", {"text": 5})
    assert code == 400 and body["field"] == "text"
    code, body = append(api, run, "stdout", "x" * (256 * 1024 + 1))
    assert code == 413 and body["field"] == "text"
    for params, field in [("offset=-1", "offset"), ("offset=abc", "offset"), ("max_chars=0", "max_chars"),
                          ("max_chars=1048577", "max_chars"), ("max_chars=1.5", "max_chars")]:
        code, body = api.call("GET", f"{WS}/runs/{run}/logs/stdout?{params}")
        assert code == 400 and body["field"] == field, (params, body)
    assert {s["stream"]: s["size"] for s in api.ok("GET", f"{WS}/runs/{run}/logs")["streams"]} == {"stdout": 4}
    assert read(api, run, "stdout")["text"] == "kept"


def test_append_to_an_ended_run_is_409(api, run):
    append(api, run, "stdout", "before\n")
    api.ok("POST", f"{WS}/runs/{run}/status", {"status": "Completed"})
    code, body = append(api, run, "stdout", "after\n")
    assert code == 409, body
    code, body = append(api, run, "fresh", "after\n")
    assert code == 409
    page = read(api, run, "stdout")
    assert page["text"] == "before\n" and page["run_ended"] is True and page["run_status"] == "Completed"
    assert [s["stream"] for s in api.ok("GET", f"{WS}/runs/{run}/logs")["streams"]] == ["stdout"]


def test_concurrent_appends_lose_nothing(api, run, services):
    # Given several threads appending distinct lines to one stream at once
    threads_count, appends = 4, 5
    lines = {n: [f"thread {n} line {i} {'.' * (n + i)}\n" for i in range(appends)] for n in range(threads_count)}

    def work(n: int) -> None:
        for line in lines[n]:
            services.logs.append("ws", run, "shared", line)

    assert all_at_once(work, threads_count) == []

    # Then the stream's size is the sum and every line is there once, whole
    total = sum(len(line) for group in lines.values() for line in group)
    assert {s["stream"]: s["size"] for s in api.ok("GET", f"{WS}/runs/{run}/logs")["streams"]} == {"shared": total}
    text = read(api, run, "shared")["text"]
    assert len(text) == total
    assert sorted(text.splitlines(keepends=True)) == sorted(line for group in lines.values() for line in group)
    # each thread's lines keep their order
    for n, group in lines.items():
        positions = [text.index(line) for line in group]
        assert positions == sorted(positions)
    assert read_all(api, run, "shared", 97) == text


def test_a_reader_stops_at_a_range_still_being_written_until_the_run_ends(api, services):
    # Given an append that reserved offsets 6..11 but has not written its text yet
    from chalicelib.domain import table_keys
    from chalicelib.store.table import Update

    api.ok("POST", "/v1/workspaces", {"name": "gaps"})
    run = api.ok("POST", "/v1/workspaces/gaps/runs", {"experiment": "e", "status": "Running"})
    base = f"/v1/workspaces/gaps/runs/{run['id']}/logs/stdout"
    api.ok("POST", base, {"text": "first\n"})
    services.ctx.table.update(Update(table_keys.log_stream(run["id"], "stdout"), add={"size": 6}))
    api.ok("POST", base, {"text": "third\n"})

    # When a follower reads while the run is active, it stops before the hole
    assert api.ok("GET", base)["text"] == "first\n"
    assert api.ok("GET", base + "?offset=6")["text"] == ""

    # Then once the run has ended, the hole is skipped and nothing after it is lost
    api.ok("POST", f"/v1/workspaces/gaps/runs/{run['id']}/status", {"status": "Completed"})
    read = api.ok("GET", base + "?offset=6")
    assert read["text"] == "third\n" and read["next_offset"] == 18
