"""Snapshots: contents uploaded once by digest through presigned URLs, manifests registered by id."""
from __future__ import annotations

import hashlib

import pytest

from tests.server.api.helpers import transfer
from chalicelib.store.table import Query

WS = "/v1/workspaces/ws"
SNAPSHOTS = f"{WS}/snapshots"
FOLDER = {
    "train.py": b"print('hi')\n",
    "lib/util.py": b"X = 1\n",
    "lib/copy_of_util.py": b"X = 1\n",  # same content as lib/util.py: stored once
    "data/empty.txt": b"",
    "run.sh": b"#!/bin/sh\necho ok\n",
    "r\u00e9sum\u00e9 \u2713.txt": "h\u00e9llo".encode(),
}


def snapshot_items(services) -> list[dict]:
    return list(services.ctx.table.query_all(Query("WS#ws", sk_prefix="SNAPSHOT#")))


@pytest.fixture
def workspace(api) -> str:
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    return "ws"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(folder: dict[str, bytes]) -> list[dict]:
    return [{"path": p, "digest": digest(d), "size": len(d), "executable": p.endswith(".sh")}
            for p, d in folder.items()]


def contents(folder: dict[str, bytes]) -> list[dict]:
    return [{"digest": digest(d), "size": len(d)} for d in folder.values()]


def upload_missing(api, backend, services, folder: dict[str, bytes]) -> list[str]:
    by_digest = {digest(d): d for d in folder.values()}
    uploads = api.ok("POST", f"{SNAPSHOTS}/uploads", {"files": contents(folder)})["uploads"]
    for item in uploads:
        assert transfer(backend, services, "PUT", item["url"], by_digest[item["digest"]])[0] == 200, item
    return [u["digest"] for u in uploads]


def test_only_missing_contents_get_upload_urls(api, backend, services, workspace):
    # Given one content already uploaded
    assert upload_missing(api, backend, services, {"lib/util.py": FOLDER["lib/util.py"]}) == [digest(b"X = 1\n")]

    # Then the folder's listing offers URLs only for the others, each content once
    missing = upload_missing(api, backend, services, FOLDER)
    assert missing == list(dict.fromkeys(digest(d) for d in FOLDER.values() if d != b"X = 1\n"))

    # And once all are uploaded, nothing is missing
    assert api.ok("POST", f"{SNAPSHOTS}/uploads", {"files": contents(FOLDER)}) == {"uploads": []}


def test_create_get_and_download_round_trip(api, backend, services, workspace):
    # Given a folder whose contents are uploaded and whose manifest is registered
    upload_missing(api, backend, services, FOLDER)
    created = api.ok("POST", SNAPSHOTS, {"files": manifest(FOLDER)}, status=201)
    assert len(created["id"]) == 64
    assert created["file_count"] == len(FOLDER)
    assert created["total_bytes"] == sum(len(d) for d in FOLDER.values())

    # Then it reads back with its files, sorted by path
    shown = api.ok("GET", f"{SNAPSHOTS}/{created['id']}")
    assert {k: shown[k] for k in created} == created
    assert shown["files"] == sorted(manifest(FOLDER), key=lambda f: f["path"])

    # And every file downloads byte for byte through its URL
    downloads = api.ok("GET", f"{SNAPSHOTS}/{created['id']}/downloads")["files"]
    assert [{k: f[k] for k in ("path", "digest", "size", "executable")} for f in downloads] == shown["files"]
    for f in downloads:
        assert transfer(backend, services, "GET", f["url"]) == (200, FOLDER[f["path"]]), f["path"]

    # And the manifest and contents sit under the workspace's blob prefix
    prefix = services.workspaces.record("ws")["blob_prefix"]
    keys = {b.key for b in services.ctx.blobs.list_all(prefix + "snapshots/")}
    assert prefix + f"snapshots/manifests/{created['id']}.json" in keys
    assert len(keys) == 1 + len({digest(d) for d in FOLDER.values()})


def test_same_files_give_the_same_snapshot(api, backend, services, workspace):
    upload_missing(api, backend, services, FOLDER)
    first = api.ok("POST", SNAPSHOTS, {"files": manifest(FOLDER)})
    writes = services.ctx.table.writes

    # The same files in another order: the same id and answer, nothing written
    again = api.ok("POST", SNAPSHOTS, {"files": list(reversed(manifest(FOLDER)))})
    assert again == first
    assert services.ctx.table.writes == writes

    # A changed executable bit, or a file less, is another snapshot
    flipped = [{**f, "executable": not f["executable"]} for f in manifest(FOLDER)]
    assert api.ok("POST", SNAPSHOTS, {"files": flipped})["id"] != first["id"]
    assert api.ok("POST", SNAPSHOTS, {"files": manifest(FOLDER)[1:]})["id"] != first["id"]

    # executable defaults to false
    plain = [{k: v for k, v in f.items() if k != "executable"} for f in manifest({"a.txt": b"a"})]
    upload_missing(api, backend, services, {"a.txt": b"a"})
    created = api.ok("POST", SNAPSHOTS, {"files": plain})
    assert api.ok("GET", f"{SNAPSHOTS}/{created['id']}")["files"][0]["executable"] is False


def test_a_concurrent_registration_answers_with_the_stored_one(api, backend, services, workspace, monkeypatch):
    # Given a snapshot registered between another request's existence check and its write
    from chalicelib.services.snapshots import Snapshots

    upload_missing(api, backend, services, FOLDER)
    first = api.ok("POST", SNAPSHOTS, {"files": manifest(FOLDER)})
    real_get, missed = services.ctx.table.get_item, []

    def miss_the_snapshot_once(key):
        if key.sk.startswith("SNAPSHOT#") and not missed:
            missed.append(key)
            return None
        return real_get(key)

    monkeypatch.setattr(services.ctx.table, "get_item", miss_the_snapshot_once)

    # Then the late request answers with the stored one, and one item remains
    principal = services.identity.authenticate(f"Bearer {api.token}")
    assert Snapshots(services.ctx).create(principal, "ws", manifest(FOLDER)) == first
    assert len(missed) == 1
    assert len(snapshot_items(services)) == 1


def test_missing_content_is_400_naming_the_file(api, backend, services, workspace):
    upload_missing(api, backend, services, {"train.py": FOLDER["train.py"]})
    files = manifest({"train.py": FOLDER["train.py"], "other.py": b"not uploaded"})
    code, body = api.call("POST", SNAPSHOTS, {"files": files})
    assert code == 400 and body["field"] == "files[1].digest", body
    assert body["details"]["missing"] == [digest(b"not uploaded")]

    # a content stored at another size than claimed is refused too
    files = [{**manifest({"train.py": FOLDER["train.py"]})[0], "size": 3}]
    code, body = api.call("POST", SNAPSHOTS, {"files": files})
    assert code == 400 and body["field"] == "files[0].digest", body
    assert snapshot_items(services) == []


@pytest.mark.parametrize("path", ["../x", "/abs", "a//b", "a\\b", "a/../b", "./a", "dir/", "", "ctrl\x01", "del\x7f",
                                  "c1\x85", "lone\ud800", "x" * 1025])
def test_bad_paths_are_400_naming_the_entry(api, workspace, path):
    files = manifest({"fine.txt": b"", path: b""})
    code, body = api.call("POST", SNAPSHOTS, {"files": files})
    assert code == 400 and body["field"] == "files[1].path", (path, body)


def test_bad_entries_are_400_naming_the_field(api, workspace):
    good = manifest({"a.txt": b"a"})[0]
    cases = [
        ([good, good], "files[1].path"),  # duplicate path
        ([good, {**good, "path": "a.txt/b"}], "files[0].path"),  # a file is also a folder
        ([{**good, "digest": "ABC"}], "files[0].digest"),
        ([{**good, "digest": "A" * 64}], "files[0].digest"),
        ([{**good, "size": -1}], "files[0].size"),
        ([{**good, "size": "1"}], "files[0].size"),
        ([{**good, "size": True}], "files[0].size"),
        ([{**good, "executable": 1}], "files[0].executable"),
        ([{**good, "mode": 755}], "files[0].mode"),
        ([{k: v for k, v in good.items() if k != "size"}], "files[0].size"),
        (["a.txt"], "files[0]"),
        ("a.txt", "files"),
    ]
    for files, field in cases:
        code, body = api.call("POST", SNAPSHOTS, {"files": files})
        assert code == 400 and body["field"] == field, (files, body)
    with_path = {"digest": good["digest"], "size": 1, "path": "x"}
    code, body = api.call("POST", f"{SNAPSHOTS}/uploads", {"files": [with_path]})
    assert code == 400 and body["field"] == "files[0].path"
    code, body = api.call("POST", f"{SNAPSHOTS}/uploads", {"files": [{"digest": "no", "size": 1}]})
    assert code == 400 and body["field"] == "files[0].digest"


def test_limits_refuse_naming_the_limit(api, workspace, monkeypatch):
    monkeypatch.setenv("NIMBUS_SNAPSHOT_MAX_FILES", "3")
    monkeypatch.setenv("NIMBUS_SNAPSHOT_MAX_BYTES", "10")
    many, big = {f"f{i}": bytes([i]) for i in range(4)}, {"big.bin": b"x" * 11}
    for folder, limit in [(many, "NIMBUS_SNAPSHOT_MAX_FILES"), (big, "NIMBUS_SNAPSHOT_MAX_BYTES")]:
        for route, files in [(SNAPSHOTS, manifest(folder)), (f"{SNAPSHOTS}/uploads", contents(folder))]:
            code, body = api.call("POST", route, {"files": files})
            assert code == 413 and body["field"] == "files", body
            assert limit in body["message"] and ("3 files" in body["message"] or "10 bytes" in body["message"]), body
    # at the limits exactly: accepted
    assert api.call("POST", f"{SNAPSHOTS}/uploads", {"files": contents({"a": b"x" * 10})})[0] == 200


def test_roles(api, backend, services, workspace, user_token):
    upload_missing(api, backend, services, FOLDER)
    snapshot_id = api.ok("POST", SNAPSHOTS, {"files": manifest(FOLDER)})["id"]
    reader, stranger = user_token("rita"), user_token("sam")
    api.ok("POST", f"{WS}/members", {"user": "rita", "role": "reader"})

    # A reader reads, and may not write
    assert api.ok("GET", f"{SNAPSHOTS}/{snapshot_id}", token=reader)["id"] == snapshot_id
    assert len(api.ok("GET", f"{SNAPSHOTS}/{snapshot_id}/downloads", token=reader)["files"]) == len(FOLDER)
    assert api.call("POST", SNAPSHOTS, {"files": manifest(FOLDER)}, token=reader)[0] == 403
    assert api.call("POST", f"{SNAPSHOTS}/uploads", {"files": contents(FOLDER)}, token=reader)[0] == 403

    # A non-member sees nothing
    for method, path, body in [("GET", f"{SNAPSHOTS}/{snapshot_id}", None),
                               ("GET", f"{SNAPSHOTS}/{snapshot_id}/downloads", None),
                               ("POST", SNAPSHOTS, {"files": manifest(FOLDER)}),
                               ("POST", f"{SNAPSHOTS}/uploads", {"files": contents(FOLDER)})]:
        assert api.call(method, path, body, token=stranger)[0] == 404, (method, path)


def test_unknown_or_malformed_ids_are_404(api, workspace):
    for snapshot_id in ["0" * 64, "nope", "A" * 64, "0" * 63, "0" * 65, "..%2F..%2Fx"]:
        for suffix in ("", "/downloads"):
            code, body = api.call("GET", f"{SNAPSHOTS}/{snapshot_id}{suffix}")
            assert code == 404 and body["code"] == "NotFound", (snapshot_id, suffix, body)


def test_a_workspace_with_a_snapshot_is_deleted_only_by_force(api, backend, services, workspace):
    upload_missing(api, backend, services, FOLDER)
    snapshot_id = api.ok("POST", SNAPSHOTS, {"files": manifest(FOLDER)})["id"]

    code, body = api.call("DELETE", WS)
    assert code == 409, body
    assert api.ok("GET", f"{SNAPSHOTS}/{snapshot_id}")["id"] == snapshot_id

    prefix = services.workspaces.record("ws")["blob_prefix"]
    api.ok("DELETE", f"{WS}?force=true")
    assert snapshot_items(services) == []
    assert list(services.ctx.blobs.list_all(prefix)) == []

    # A new workspace of the same name starts without it
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    assert api.call("GET", f"{SNAPSHOTS}/{snapshot_id}")[0] == 404
    assert len(api.ok("POST", f"{SNAPSHOTS}/uploads", {"files": contents(FOLDER)})["uploads"]) == 5
