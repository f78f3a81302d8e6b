"""Output files and images: presigned upload and download URLs, with real bytes moved through them."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.server.api.helpers import every_page, token_param, transfer

WS = "/v1/workspaces/ws"


@pytest.fixture
def run(api) -> str:
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    return api.ok("POST", f"{WS}/runs", {"experiment": "exp", "status": "Running"})["id"]


def upload(api, backend, services, run_id: str, files: dict[str, bytes]) -> None:
    uploads = api.ok("POST", f"{WS}/runs/{run_id}/outputs/uploads", {"paths": list(files)})["uploads"]
    assert [u["path"] for u in uploads] == list(files)
    for item in uploads:
        status, _ = transfer(backend, services, "PUT", item["url"], files[item["path"]])
        assert status == 200, item


def download(api, backend, services, run_id: str, path: str) -> bytes:
    info = api.ok("GET", f"{WS}/runs/{run_id}/outputs/download?path={quote(path)}")
    assert info["path"] == path
    status, data = transfer(backend, services, "GET", info["url"])
    assert status == 200
    assert info["size"] == len(data)
    return data


def listing(api, run_id: str, **params) -> list[dict]:
    query = "&".join(f"{k}={quote(str(v))}" for k, v in params.items())
    pages = every_page(lambda token: api.ok("GET", f"{WS}/runs/{run_id}/outputs?{query}" + token_param(token)))
    return [f for page in pages for f in page["files"]]


def test_files_move_through_presigned_urls(api, backend, services, run):
    # Given a few files of a run, uploaded through their presigned URLs
    files = {
        "model.bin": bytes(range(256)) * 40,
        "metrics/summary.json": b'{"acc": 0.9}',
        "deep/a/b/c.txt": b"",
        "r\u00e9sum\u00e9 \u2713.txt": "h\u00e9llo".encode(),
    }
    upload(api, backend, services, run, files)

    # Then they are listed, in key order, with their sizes
    listed = listing(api, run)
    assert [f["path"] for f in listed] == sorted(files)
    assert {f["path"]: f["size"] for f in listed} == {p: len(d) for p, d in files.items()}
    assert all(f["modified"] > 0 for f in listed)

    # And each comes back byte for byte
    for path, data in files.items():
        assert download(api, backend, services, run, path) == data

    # And an upload overwrites
    upload(api, backend, services, run, {"model.bin": b"v2"})
    assert download(api, backend, services, run, "model.bin") == b"v2"


def test_listing_by_prefix_and_in_pages(api, backend, services, run):
    files = {f"ckpt/epoch-{i:02d}.pt": b"x" * i for i in range(5)} | {"final.pt": b"f", "ckpt-notes.txt": b"n"}
    upload(api, backend, services, run, files)
    assert [f["path"] for f in listing(api, run, prefix="ckpt/")] == sorted(p for p in files if p.startswith("ckpt/"))
    assert [f["path"] for f in listing(api, run, prefix="ckpt")] == sorted(p for p in files if p.startswith("ckpt"))
    assert listing(api, run, prefix="none/") == []

    pages = every_page(lambda token: api.ok("GET", f"{WS}/runs/{run}/outputs?max_results=2" + token_param(token)))
    assert all(len(page["files"]) <= 2 for page in pages)
    assert [f["path"] for page in pages for f in page["files"]] == sorted(files) and len(pages) >= 4

    # another run's outputs stay apart
    other = api.ok("POST", f"{WS}/runs", {"experiment": "exp"})["id"]
    assert listing(api, other) == []
    code, body = api.call("GET", f"{WS}/runs/{other}/outputs/download?path=final.pt")
    assert code == 404


def test_listing_rejects_bad_input(api, run):
    for params, field in [("prefix=../x", "prefix"), ("prefix=/abs", "prefix"), ("max_results=0", "max_results"),
                          ("max_results=many", "max_results"), ("page_token=%21%21", "page_token")]:
        code, body = api.call("GET", f"{WS}/runs/{run}/outputs?{params}")
        assert code == 400 and body["field"] == field, (params, body)


def test_foreign_listing_token_is_400(api, backend, services, run):
    upload(api, backend, services, run, {"a": b"1", "b": b"2", "c": b"3"})
    token = api.ok("GET", f"{WS}/runs/{run}/outputs?max_results=1")["next_page_token"]
    assert token
    other = api.ok("POST", f"{WS}/runs", {"experiment": "exp"})["id"]
    code, body = api.call("GET", f"{WS}/runs/{other}/outputs?page_token={token}")
    assert code == 400 and body["field"] == "page_token"


def test_unsafe_paths_are_rejected(api, services, run):
    bad = ["../escape", "a/../../b", "/etc/passwd", "a//b", "trailing/", "back\\slash", "./here", "a/./b", "..",
           ".", "", "x" * 1025, "ctrl\x01char", "new\nline"]
    for path in bad:
        code, body = api.call("POST", f"{WS}/runs/{run}/outputs/uploads", {"paths": ["fine.txt", path]})
        assert code == 400, (path, body)
        assert body["field"] == "paths[1]", (path, body)
    code, body = api.call("POST", f"{WS}/runs/{run}/outputs/uploads", {"paths": [bad[0]]})
    assert code == 400 and body["field"] == "paths[0]"
    code, body = api.call("POST", f"{WS}/runs/{run}/outputs/uploads", {"paths": []})
    assert code == 400 and body["field"] == "paths"
    code, body = api.call("POST", f"{WS}/runs/{run}/outputs/uploads", {"paths": ["a"] * 501})
    assert code == 400 and body["field"] == "paths"
    code, body = api.call("POST", f"{WS}/runs/{run}/outputs/uploads", {"paths": ["a", 5]})
    assert code == 400 and body["field"].startswith("paths")
    # downloads check the path the same way
    for path in ["../escape", "/abs", "a//b", ""]:
        code, body = api.call("GET", f"{WS}/runs/{run}/outputs/download?path={quote(path)}")
        assert code == 400 and body["field"] == "path", (path, body)
    code, body = api.call("GET", f"{WS}/runs/{run}/outputs/download")
    assert code == 400 and body["field"] == "path"
    assert listing(api, run) == []
    assert list(services.ctx.blobs.list_all("")) == []


def test_missing_file_is_404(api, backend, services, run):
    code, body = api.call("GET", f"{WS}/runs/{run}/outputs/download?path=nothing.bin")
    assert code == 404 and body["code"] == "NotFound"
    # a URL was handed out but nothing was uploaded through it: still missing
    api.ok("POST", f"{WS}/runs/{run}/outputs/uploads", {"paths": ["later.bin"]})
    assert api.call("GET", f"{WS}/runs/{run}/outputs/download?path=later.bin")[0] == 404
    # a folder is not a file
    upload(api, backend, services, run, {"dir/file.txt": b"x"})
    assert api.call("GET", f"{WS}/runs/{run}/outputs/download?path=dir")[0] == 404


def test_images_move_through_presigned_urls(api, backend, services, run):
    # Given an image uploaded through its URL and logged as a metric
    image = api.ok("POST", f"{WS}/runs/{run}/images", {"name": "roc", "extension": "svg"})
    assert image["path"].startswith("images/") and image["path"].endswith(".svg")
    assert transfer(backend, services, "PUT", image["url"], b"<svg/>")[0] == 200
    code, _ = api.call("POST", f"{WS}/runs/{run}/metrics",
                       {"metrics": [{"name": "roc", "type": "image", "values": [{"path": image["path"]}]}]})
    assert code == 200

    # Then its download URL gives the bytes back
    path = api.ok("GET", f"{WS}/runs/{run}/metric-history?name=roc")["values"][0]["path"]
    got = api.ok("GET", f"{WS}/runs/{run}/images?path={quote(path)}")
    assert transfer(backend, services, "GET", got["url"]) == (200, b"<svg/>")

    # And bad requests are refused
    code, body = api.call("POST", f"{WS}/runs/{run}/images", {"name": "roc", "extension": "exe"})
    assert code == 400 and body["field"] == "extension"
    code, body = api.call("GET", f"{WS}/runs/{run}/images?path=outputs/x.png")
    assert code == 400 and body["field"] == "path"
    code, body = api.call("GET", f"{WS}/runs/{run}/images?path=images/../x.png")
    assert code == 400 and body["field"] == "path"
    assert api.call("GET", f"{WS}/runs/{run}/images?path=images/missing.png")[0] == 404
    # images are not outputs
    assert listing(api, run) == []
