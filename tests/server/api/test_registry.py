"""The model registry over HTTP on both backends: uploads, run copies, numbering, search, aliases, in-use."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from chalicelib.errors import Conflict, NotFound
from chalicelib.domain import table_keys
from chalicelib.services.identity import Principal
from chalicelib.services.registry import model_files_of
from tests.server.api.helpers import all_at_once, every_page, token_param, transfer

WS = "/v1/workspaces/ws"
MODELS = f"{WS}/models"


@pytest.fixture
def ws(api) -> str:
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    return "ws"


def upload(api, backend, services, name: str, files: dict[str, bytes], skip: tuple[str, ...] = ()) -> str:
    reply = api.ok("POST", f"{MODELS}/{name}/uploads",
                   {"files": [{"path": p, "size": len(d)} for p, d in files.items()]})
    assert [f["path"] for f in reply["files"]] == list(files)
    for item in reply["files"]:
        if item["path"] not in skip:
            assert transfer(backend, services, "PUT", item["url"], files[item["path"]])[0] == 200
    return reply["upload_id"]


def register(api, backend, services, name: str, files: dict[str, bytes], **extra) -> dict:
    upload_id = upload(api, backend, services, name, files)
    return api.ok("POST", f"{MODELS}/{name}/versions", {"upload_id": upload_id, **extra}, status=201)


def downloaded(api, backend, services, name: str, version) -> dict[str, bytes]:
    files = api.ok("GET", f"{MODELS}/{name}/versions/{version}/files")["files"]
    result = {}
    for f in files:
        status, data = transfer(backend, services, "GET", f["url"])
        assert status == 200 and len(data) == f["size"]
        result[f["path"]] = data
    return result


def run_with_outputs(api, backend, services, files: dict[str, bytes], submission: dict | None = None) -> str:
    principal = Principal("admin", True, "t")
    run = services.runs.create(principal, "ws", "train", status="Running", submission=submission)
    uploads = api.ok("POST", f"{WS}/runs/{run['id']}/outputs/uploads", {"paths": list(files)})["uploads"]
    for item in uploads:
        assert transfer(backend, services, "PUT", item["url"], files[item["path"]])[0] == 200
    return run["id"]


def expect_error(api, method: str, path: str, body, status: int, field: str | None, token="default") -> dict:
    code, reply = api.call(method, path, body, token=token)
    assert code == status, (method, path, body, reply)
    assert reply["message"] and reply.get("field") == field, reply
    return reply


# --- registering -------------------------------------------------------------------------------------
def test_a_file_registers_as_version_1_with_its_metadata(api, backend, services, ws):
    # Given one file uploaded through its presigned URL, registered with metadata
    version = register(api, backend, services, "iris", {"model.pkl": b"\x80pickle"}, description="first",
                       tags={"stage": "dev"}, properties={"accuracy": "0.97"}, framework="scikit-learn",
                       framework_version="1.5.0")

    # Then the version has the documented shape
    assert version["name"] == "iris" and version["version"] == 1 and version["id"] == "iris:1"
    assert version["asset_path"] == "model.pkl" and version["files"] == [{"path": "model.pkl", "size": 7}]
    assert version["total_bytes"] == 7 and version["description"] == "first"
    assert (version["framework"], version["framework_version"]) == ("scikit-learn", "1.5.0")
    assert version["tags"] == {"stage": "dev"} and version["properties"] == {"accuracy": "0.97"}
    assert version["aliases"] == [] and version["deployments"] == [] and version["lineage"] == {}
    assert version["created_by"] == "admin" and version["created"].endswith("Z")

    # And it reads back by number and as the latest, with its bytes
    assert api.ok("GET", f"{MODELS}/iris/versions/1") == version
    assert api.ok("GET", f"{MODELS}/iris/versions/latest") == version
    assert downloaded(api, backend, services, "iris", 1) == {"model.pkl": b"\x80pickle"}
    model = api.ok("GET", f"{MODELS}/iris")
    assert model == {"name": "iris", "latest_version": 1, "aliases": {}, "created": version["created"]}

    # And the next registration is version 2, the upload being spent
    assert register(api, backend, services, "iris", {"model.pkl": b"v2"})["version"] == 2
    assert api.ok("GET", f"{MODELS}/iris/versions/latest")["version"] == 2


def test_a_repeated_registration_of_one_upload_answers_its_version_and_adds_none(api, backend, services, ws):
    # Given an upload registered once, whose announced file list is still there, as when the platform
    # stopped between storing the version and spending the upload (or the answer was lost on the way)
    upload_id = upload(api, backend, services, "iris", {"model.pkl": b"weights"})
    prefix = services.ctx.table.get_item(table_keys.workspace("ws"))["blob_prefix"]
    manifest_key = f"{prefix}models/uploads/{upload_id}.json"
    manifest = services.ctx.blobs.get_bytes(manifest_key)
    first = api.ok("POST", f"{MODELS}/iris/versions", {"upload_id": upload_id, "tags": {"n": "1"}}, status=201)
    services.ctx.blobs.put_bytes(manifest_key, manifest)

    # When the client sends the same registration again, then once more after the upload is spent
    again = api.ok("POST", f"{MODELS}/iris/versions", {"upload_id": upload_id, "tags": {"n": "1"}}, status=201)
    services.ctx.blobs.delete(manifest_key)
    third = api.ok("POST", f"{MODELS}/iris/versions", {"upload_id": upload_id, "tags": {"n": "1"}}, status=201)

    # Then every answer is version 1 and no second version exists
    assert first["version"] == again["version"] == third["version"] == 1
    assert api.ok("GET", f"{MODELS}/iris")["latest_version"] == 1
    assert [v["version"] for v in api.ok("GET", f"{MODELS}/iris/versions")["versions"]] == [1]


def test_a_folder_registers_with_the_folder_as_asset_path(api, backend, services, ws):
    files = {"bert/config.json": b"{}", "bert/weights/part-0.bin": b"0" * 100, "bert/empty": b""}
    version = register(api, backend, services, "bert", files)
    assert version["asset_path"] == "bert" and version["total_bytes"] == 102
    assert sorted(f["path"] for f in version["files"]) == sorted(files)
    assert downloaded(api, backend, services, "bert", 1) == files
    loose = register(api, backend, services, "loose", {"a.txt": b"a", "b.txt": b"b"})
    assert loose["asset_path"] == "."


def test_an_upload_with_missing_files_is_refused_naming_them(api, backend, services, ws):
    files = {"model/a.bin": b"a", "model/b.bin": b"bb"}
    upload_id = upload(api, backend, services, "m", files, skip=("model/b.bin",))
    reply = expect_error(api, "POST", f"{MODELS}/m/versions", {"upload_id": upload_id}, 400, "upload_id")
    assert "model/b.bin" in reply["message"] and reply["details"]["missing"] == ["model/b.bin"]
    # a wrong size counts as missing too
    upload_id = upload(api, backend, services, "m", {"x.bin": b"12345"}, skip=("x.bin",))
    bucket_url = api.ok("POST", f"{MODELS}/m/uploads", {"files": [{"path": "x.bin", "size": 5}]})
    assert bucket_url["upload_id"] != upload_id
    expect_error(api, "POST", f"{MODELS}/m/versions", {"upload_id": upload_id}, 400, "upload_id")
    # another model's upload, and an unknown one
    other = upload(api, backend, services, "other", {"f": b"1"})
    expect_error(api, "POST", f"{MODELS}/m/versions", {"upload_id": other}, 400, "upload_id")
    expect_error(api, "POST", f"{MODELS}/m/versions", {"upload_id": "0" * 22}, 400, "upload_id")
    assert api.call("GET", f"{MODELS}/m")[0] == 404


def test_registering_from_a_run_copies_its_files_and_records_lineage(api, backend, services, ws):
    # Given a submitted run with a model file and a model folder among its outputs
    outputs = {"outputs/model.pkl": b"pickled", "outputs/model/w.bin": b"weights",
               "outputs/model/sub/cfg.json": b"{}", "outputs/other.txt": b"x"}
    git = {"remote": "https://example.org/repo.git", "branch": "main", "commit": "abc123", "dirty": False}
    run_id = run_with_outputs(api, backend, services, outputs, {"snapshot_id": "f" * 64, "git": git})

    # When a file and a folder of it are registered
    single = api.ok("POST", f"{MODELS}/iris/versions", {"run_id": run_id, "path": "outputs/model.pkl",
                                                        "tags": {"from": "run"}}, status=201)
    folder = api.ok("POST", f"{MODELS}/iris/versions", {"run_id": run_id, "path": "outputs/model"}, status=201)

    # Then each holds a copy of the bytes and the run's lineage
    assert single["asset_path"] == "model.pkl" and single["files"] == [{"path": "model.pkl", "size": 7}]
    assert single["lineage"] == {"run_id": run_id, "experiment": "train", "snapshot_id": "f" * 64,
                                 "git": {"commit": "abc123", "branch": "main",
                                         "repository": "https://example.org/repo.git"}}
    assert folder["asset_path"] == "model" and folder["version"] == 2
    assert downloaded(api, backend, services, "iris", 2) == {"model/w.bin": b"weights", "model/sub/cfg.json": b"{}"}
    assert downloaded(api, backend, services, "iris", 1) == {"model.pkl": b"pickled"}

    # And unknown paths or runs are refused naming the field
    expect_error(api, "POST", f"{MODELS}/iris/versions", {"run_id": run_id, "path": "outputs/nothing"}, 400, "path")
    expect_error(api, "POST", f"{MODELS}/iris/versions", {"run_id": run_id, "path": "../x"}, 400, "path")
    expect_error(api, "POST", f"{MODELS}/iris/versions", {"run_id": "0" * 22, "path": "outputs/model.pkl"},
                 400, "run_id")
    expect_error(api, "POST", f"{MODELS}/iris/versions", {"run_id": run_id}, 400, "path")


def test_an_interactive_run_has_lineage_without_git(api, backend, services, ws):
    run_id = run_with_outputs(api, backend, services, {"outputs/m.json": b"{}"})
    version = api.ok("POST", f"{MODELS}/m/versions", {"run_id": run_id, "path": "outputs/m.json"}, status=201)
    assert version["lineage"] == {"run_id": run_id, "experiment": "train", "snapshot_id": None}


def test_fifty_concurrent_registrations_number_1_to_50(api, backend, services, ws):
    # Given 50 registrations of one name, released together through the service
    principal = Principal("admin", True, "t")
    run_id = run_with_outputs(api, backend, services, {"outputs/m.bin": b"m"})
    results: list[int] = []

    def work(n: int) -> None:
        results.append(services.registry.register(principal, "ws", "race", run_id=run_id, path="outputs/m.bin",
                                                  tags={"n": str(n)})["version"])

    assert all_at_once(work, 50) == []

    # Then the versions are 1..50: no gap, no duplicate
    assert sorted(results) == list(range(1, 51)), sorted(results)
    listed = [v["version"] for page in every_page(
        lambda token: api.ok("GET", f"{MODELS}/race/versions?max_results=20" + token_param(token))) for v in page["versions"]]
    assert listed == list(range(50, 0, -1))
    assert api.ok("GET", f"{MODELS}/race")["latest_version"] == 50


# --- reading and searching ---------------------------------------------------------------------------
@pytest.fixture
def catalog(api, backend, services, ws) -> None:
    """a: v1 {stage: dev}, v2 {stage: prod}; b: v1 {stage: dev, team: x}; c: v1 (no tags)."""
    register(api, backend, services, "a", {"f": b"1"}, tags={"stage": "dev"})
    register(api, backend, services, "a", {"f": b"2"}, tags={"stage": "prod"})
    register(api, backend, services, "b", {"f": b"3"}, tags={"stage": "dev", "team": "x"})
    register(api, backend, services, "c", {"f": b"4"})


def ids(api, query: str = "", page_size: int | None = None) -> list[str]:
    base = f"{MODELS}?{query}" + (f"&max_results={page_size}" if page_size else "")
    pages = every_page(lambda token: api.ok("GET", base + token_param(token)))
    return [m["id"] for page in pages for m in page["models"]]


def test_listing_latest_versions_and_all_versions(api, catalog):
    assert ids(api) == ["a:2", "b:1", "c:1"]
    assert ids(api, "all_versions=true") == ["a:2", "a:1", "b:1", "c:1"]
    assert ids(api, "name=a") == ["a:2"]
    assert ids(api, "name=a&all_versions=true") == ["a:2", "a:1"]
    assert ids(api, "name=zzz") == []
    # pages of one give the same, in the same order
    assert ids(api, "all_versions=true", page_size=1) == ["a:2", "a:1", "b:1", "c:1"]
    assert ids(api, "", page_size=1) == ["a:2", "b:1", "c:1"]
    assert ids(api, "name=a&all_versions=true", page_size=1) == ["a:2", "a:1"]


def test_searching_by_tag(api, catalog):
    assert ids(api, "tag=stage") == ["a:2", "b:1"]
    assert ids(api, "tag=stage=dev") == ["b:1"]  # latest versions only: a:2 is prod
    assert ids(api, "tag=stage=dev&all_versions=true") == ["a:1", "b:1"]
    assert ids(api, "tag=stage=dev&tag=team=x&all_versions=true") == ["b:1"]
    assert ids(api, "tag=stage=dev&all_versions=true", page_size=1) == ["a:1", "b:1"]
    assert ids(api, "tag=none") == []
    expect_error(api, "GET", f"{MODELS}?tag==v", None, 400, "tag")


def test_versions_are_listed_newest_first_in_pages(api, catalog):
    pages = every_page(lambda token: api.ok("GET", f"{MODELS}/a/versions?max_results=1" + token_param(token)))
    assert [v["id"] for page in pages for v in page["versions"]] == ["a:2", "a:1"]
    # a token of one model's listing is refused by another's
    first = api.ok("GET", f"{MODELS}/a/versions?max_results=1")
    expect_error(api, "GET", f"{MODELS}/b/versions?page_token={first['next_page_token']}", None, 400, "page_token")
    expect_error(api, "GET", f"{MODELS}?page_token=bm9wZQ", None, 400, "page_token")
    expect_error(api, "GET", f"{MODELS}/nope/versions", None, 404, None)


# --- changing ----------------------------------------------------------------------------------------
def test_tags_change_and_properties_are_write_once(api, backend, services, ws):
    register(api, backend, services, "m", {"f": b"1"}, tags={"a": "1", "b": "2"}, properties={"p": "1"})
    path = f"{MODELS}/m/versions/1"
    changed = api.ok("PATCH", path, {"tags": {"c": "3", "a": "9"}, "remove_tags": ["b"], "description": "d",
                                     "properties": {"p": "1", "q": "2"}})
    assert changed["tags"] == {"a": "9", "c": "3"} and changed["description"] == "d"
    assert changed["properties"] == {"p": "1", "q": "2"}
    reply = expect_error(api, "PATCH", path, {"properties": {"p": "other"}}, 409, "properties.p")
    assert "write-once" in reply["message"]
    expect_error(api, "PATCH", path, {"tags": {"x": "1"}, "remove_tags": ["x"]}, 400, "remove_tags")
    expect_error(api, "PATCH", path, {"tags": {"": "1"}}, 400, "tags.")
    expect_error(api, "PATCH", f"{MODELS}/m/versions/7", {"tags": {"x": "1"}}, 404, None)
    assert api.ok("GET", path)["properties"] == {"p": "1", "q": "2"}


def test_aliases_move_in_one_transaction_and_keep_their_history(api, backend, services, ws):
    for data in (b"1", b"2", b"3"):
        register(api, backend, services, "m", {"f": data})
    assert api.ok("PUT", f"{MODELS}/m/aliases/prod", {"version": 1}) == {"alias": "prod", "version": 1,
                                                                          "previous": None}
    assert api.ok("PUT", f"{MODELS}/m/aliases/prod", {"version": 2}) == {"alias": "prod", "version": 2,
                                                                          "previous": 1}
    api.ok("PUT", f"{MODELS}/m/aliases/staging", {"version": 3})
    assert api.ok("GET", f"{MODELS}/m/versions/prod")["version"] == 2
    assert api.ok("GET", f"{MODELS}/m/versions/2")["aliases"] == ["prod"]
    assert api.ok("GET", f"{MODELS}/m")["aliases"] == {"prod": 2, "staging": 3}
    assert downloaded(api, backend, services, "m", "prod") == {"f": b"2"}

    assert api.ok("DELETE", f"{MODELS}/m/aliases/staging") == {"alias": "staging", "previous": 3}
    history = api.ok("GET", f"{MODELS}/m/aliases")
    assert history["aliases"] == {"prod": 2}
    assert [(h["alias"], h["from"], h["to"], h["by"]) for h in history["history"]] == [
        ("prod", None, 1, "admin"), ("prod", 1, 2, "admin"), ("staging", None, 3, "admin"), ("staging", 3, None, "admin")]
    assert all(h["at"].endswith("Z") for h in history["history"])

    expect_error(api, "PUT", f"{MODELS}/m/aliases/prod", {"version": 9}, 404, "version")
    expect_error(api, "PUT", f"{MODELS}/m/aliases/Bad!", {"version": 1}, 400, "alias")
    expect_error(api, "PUT", f"{MODELS}/m/aliases/latest", {"version": 1}, 400, "alias")
    expect_error(api, "PUT", f"{MODELS}/m/aliases/prod", {"version": "1"}, 400, "version")
    expect_error(api, "DELETE", f"{MODELS}/m/aliases/staging", None, 404, None)
    expect_error(api, "GET", f"{MODELS}/m/versions/staging", None, 404, None)
    expect_error(api, "GET", f"{MODELS}/m/versions/Not%20valid", None, 400, "version")


def test_resolve_and_model_files_for_deployments(api, backend, services, ws):
    register(api, backend, services, "m", {"dir/a.bin": b"a", "dir/b.bin": b"bb"})
    register(api, backend, services, "m", {"f.bin": b"fff"})
    api.ok("PUT", f"{MODELS}/m/aliases/prod", {"version": 1})
    registry = services.registry
    assert registry.resolve("ws", "m")["version"] == 2
    assert registry.resolve("ws", "m:1")["version"] == 1
    assert registry.resolve("ws", "m:prod")["version"] == 1
    files = model_files_of(registry.version_item("ws", "m:prod"))
    assert (files.name, files.version, files.asset_path) == ("m", 1, "dir")
    assert sorted(files.files) == [("dir/a.bin", 1), ("dir/b.bin", 2)]
    assert services.ctx.blobs.get_bytes(files.blob_prefix + "dir/b.bin") == b"bb"
    with pytest.raises(NotFound):
        registry.resolve("ws", "m:7")
    with pytest.raises(NotFound):
        registry.resolve("ws", "nope")
    with pytest.raises(NotFound):
        registry.version_item("ws", "m:7")


def test_a_deployed_version_cannot_be_deleted(api, backend, services, ws):
    # Given version 1 used by deployment ep/blue (as the deployments service records it), aliased prod
    first = register(api, backend, services, "m", {"f": b"1"})
    register(api, backend, services, "m", {"f": b"2"})
    api.ok("PUT", f"{MODELS}/m/aliases/prod", {"version": 1})
    registry, table = services.registry, services.ctx.table
    table.transact(registry.use_operations("ws", "m", 1, "ep/blue"))
    table.transact(registry.use_operations("ws", "m", 1, "ep/blue"))  # repeated: still counted once
    assert api.ok("GET", f"{MODELS}/m/versions/1")["deployments"] == ["ep/blue"]

    # Then deleting it is refused, naming the deployment, and nothing changes
    reply = expect_error(api, "DELETE", f"{MODELS}/m/versions/1", None, 409, "version")
    assert "ep/blue" in reply["message"] and reply["details"]["deployments"] == ["ep/blue"]
    assert downloaded(api, backend, services, "m", 1) == {"f": b"1"}

    # When the deployment lets go, the delete goes through: files and alias go with it
    table.transact(registry.release_operations("ws", "m", 1, "ep/blue"))
    assert registry.release_operations("ws", "m", 1, "ep/blue") == []
    item = table.get_item(table_keys.model_version("ws", "m", 1))
    assert item["deployment_count"] == 0 and item["deployments"] == {}
    prefix = model_files_of(registry.version_item("ws", f"m:{first['version']}")).blob_prefix
    assert api.ok("DELETE", f"{MODELS}/m/versions/1") == {"deleted": "m:1"}
    expect_error(api, "GET", f"{MODELS}/m/versions/1", None, 404, None)
    assert api.ok("GET", f"{MODELS}/m")["aliases"] == {}
    assert api.ok("GET", f"{MODELS}/m/aliases")["history"][-1]["to"] is None
    assert list(services.ctx.blobs.list_all(prefix)) == []
    expect_error(api, "DELETE", f"{MODELS}/m/versions/1", None, 404, None)
    expect_error(api, "DELETE", f"{MODELS}/m/versions/prod", None, 400, "version")

    # And deleting the highest version makes the one below it the latest; numbers are never reused
    api.ok("DELETE", f"{MODELS}/m/versions/2")
    expect_error(api, "GET", f"{MODELS}/m/versions/latest", None, 404, None)
    assert register(api, backend, services, "m", {"f": b"3"})["version"] == 3
    with pytest.raises(NotFound):
        registry.use_operations("ws", "m", 2, "ep/blue")


def test_a_use_recorded_concurrently_fails_the_stale_operations(api, backend, services, ws):
    from chalicelib.store.table import ConditionFailed

    register(api, backend, services, "m", {"f": b"1"})
    registry, table = services.registry, services.ctx.table
    stale = registry.use_operations("ws", "m", 1, "ep/green")
    table.transact(registry.use_operations("ws", "m", 1, "ep/green"))
    with pytest.raises(ConditionFailed):
        table.transact(stale)
    assert api.ok("GET", f"{MODELS}/m/versions/1")["deployments"] == ["ep/green"]
    with pytest.raises(Conflict):
        registry.delete_version(Principal("admin", True, "t"), "ws", "m", "1")


# --- bad input and access ----------------------------------------------------------------------------
BAD_UPLOADS = [
    ({"files": []}, "files"),
    ({"files": "x"}, "files"),
    ({"files": [{"path": "../x", "size": 1}]}, "files[0].path"),
    ({"files": [{"path": "/abs", "size": 1}]}, "files[0].path"),
    ({"files": [{"path": "a", "size": -1}]}, "files[0].size"),
    ({"files": [{"path": "a", "size": True}]}, "files[0].size"),
    ({"files": [{"path": "a"}]}, "files[0].size"),
    ({"files": [{"path": "a", "size": 1, "digest": "x"}]}, "files[0].digest"),
    ({"files": [{"path": "a", "size": 1}, {"path": "a", "size": 1}]}, "files[1].path"),
    ({"files": [{"path": "a", "size": 1}, {"path": "a/b", "size": 1}]}, "files[0].path"),
    ({"files": [1]}, "files[0]"),
    ({}, "files"),
]
BAD_REGISTRATIONS = [
    ({}, "upload_id"),
    ({"upload_id": "x", "run_id": "y", "path": "outputs/a"}, "upload_id"),
    ({"upload_id": "not-an-id"}, "upload_id"),
    ({"upload_id": "0" * 22, "path": "outputs/a"}, "path"),
    ({"run_id": "0" * 22, "path": "outputs/a", "tags": {"k": 1}}, "tags.k"),
    ({"run_id": "0" * 22, "path": "outputs/a", "framework": "x" * 256}, "framework"),
    ({"upload_id": "0" * 22, "extra": 1}, "extra"),
]


def test_bad_uploads_and_registrations_are_refused_naming_the_field(api, services, ws):
    writes = services.ctx.table.writes
    for body, field in BAD_UPLOADS:
        expect_error(api, "POST", f"{MODELS}/m/uploads", body, 400, field)
    for body, field in BAD_REGISTRATIONS:
        expect_error(api, "POST", f"{MODELS}/m/versions", body, 400, field)
    assert services.ctx.table.writes == writes


def test_bad_names_are_refused(api, ws):
    for name in ("-bad", "has space", "a" * 256, "x#y", "a:b"):
        expect_error(api, "POST", f"{MODELS}/{quote(name, safe='')}/uploads",
                     {"files": [{"path": "a", "size": 1}]}, 400, "name")
    expect_error(api, "GET", f"{MODELS}?name=-bad", None, 400, "name")
    expect_error(api, "GET", f"{MODELS}/-bad", None, 400, "name")
    expect_error(api, "GET", f"{MODELS}?max_results=0", None, 400, "max_results")


def test_readers_read_but_cannot_write_and_strangers_see_nothing(api, backend, services, ws, user_token):
    register(api, backend, services, "m", {"f": b"1"})
    reader, stranger = user_token("rita"), user_token("sam")
    api.ok("POST", f"{WS}/members", {"user": "rita", "role": "reader"})
    assert api.ok("GET", f"{MODELS}/m/versions/1", token=reader)["id"] == "m:1"
    assert api.ok("GET", MODELS, token=reader)["models"][0]["id"] == "m:1"
    for method, path, body in [("POST", f"{MODELS}/m/uploads", {"files": [{"path": "a", "size": 1}]}),
                               ("POST", f"{MODELS}/m/versions", {"upload_id": "0" * 22}),
                               ("PATCH", f"{MODELS}/m/versions/1", {"tags": {"a": "b"}}),
                               ("DELETE", f"{MODELS}/m/versions/1", None),
                               ("PUT", f"{MODELS}/m/aliases/prod", {"version": 1}),
                               ("DELETE", f"{MODELS}/m/aliases/prod", None)]:
        assert api.call(method, path, body, token=reader)[0] == 403, (method, path)
        assert api.call(method, path, body, token=stranger)[0] == 404, (method, path)
    for path in (MODELS, f"{MODELS}/m", f"{MODELS}/m/versions", f"{MODELS}/m/versions/1",
                 f"{MODELS}/m/versions/1/files", f"{MODELS}/m/aliases"):
        assert api.call("GET", path, token=stranger)[0] == 404, path
    assert api.call("GET", MODELS, token=None)[0] == 401


def test_a_run_token_reads_versions_and_registers_its_own_run_only(api, backend, services, ws):
    register(api, backend, services, "m", {"f": b"1"})
    mine = run_with_outputs(api, backend, services, {"outputs/model.bin": b"mine"})
    other = run_with_outputs(api, backend, services, {"outputs/model.bin": b"other"})
    token = services.identity.create_run_token(mine, "ws", "admin")
    assert api.ok("GET", f"{MODELS}/m/versions/1", token=token)["id"] == "m:1"
    assert len(api.ok("GET", f"{MODELS}/m/versions/latest/files", token=token)["files"]) == 1
    registered = api.ok("POST", f"{MODELS}/m/versions", {"run_id": mine, "path": "outputs/model.bin"}, token=token)
    assert registered["lineage"]["run_id"] == mine and registered["created_by"] == "admin"
    assert api.call("POST", f"{MODELS}/m/versions", {"run_id": other, "path": "outputs/model.bin"},
                    token=token)[0] == 403
    assert api.call("POST", f"{MODELS}/m/uploads", {"files": [{"path": "a", "size": 1}]}, token=token)[0] == 403
    assert api.call("DELETE", f"{MODELS}/m/versions/1", token=token)[0] == 403
    assert api.call("GET", MODELS, token=token)[0] == 403
