"""Datasets over both backends: file and tabular versions on the built-in datastore and on an S3-compatible
one, fingerprints from listings, versions under concurrency, verify, and the datastores' references."""
from __future__ import annotations

import io
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chalicelib.errors import Conflict, Invalid, NotFound
from chalicelib.services.identity import Principal
from chalicelib.wiring import build_services
from tests.server.api.helpers import all_at_once, transfer

ALICE = Principal(user="alice", is_admin=False, token_id="t1")
IRIS = b"sepal_length,sepal_width,species\n5.1,3.5,setosa\n4.9,3.0,setosa\n6.3,,virginica\n"


@pytest.fixture
def services(settings):
    built = build_services(settings)
    built.identity.create_user("alice")
    built.workspaces.create(ALICE, "ws")
    return built


def put(backend, services, datastore: str, files: dict[str, bytes]) -> None:
    listed = [{"path": path, "size": len(data)} for path, data in files.items()]
    for item in services.datastore_files.upload("ws", datastore, listed, overwrite=True)["uploads"]:
        assert transfer(backend, services, "PUT", item["url"], files[item["path"]])[0] == 200


def blob(path: str) -> dict:
    return {"datastore": "workspaceblobstore", "path": path}


def test_a_file_dataset_records_what_its_glob_matches(backend, services):
    put(backend, services, "workspaceblobstore", {"images/a/cat.png": b"c", "images/b/dog.png": b"dd",
                                                  "images/notes.txt": b"n", "other/x.png": b"x"})
    made = services.datasets.register(ALICE, "ws", "pets", "file", [blob("images/**/*.png")])
    assert (made["version"], made["file_count"], made["total_bytes"], made["existing"]) == (1, 2, 3, False)
    assert len(made["fingerprint"]) == 64
    files = services.datasets.files("ws", "pets", 1)["files"]
    assert [f["path"] for f in files] == ["images/a/cat.png", "images/b/dog.png"]
    folder = services.datasets.register(ALICE, "ws", "everything", "file", [blob("images")])
    assert folder["file_count"] == 3


def test_registering_the_same_data_again_answers_the_same_version(backend, services):
    put(backend, services, "workspaceblobstore", {"data/one.csv": b"1"})
    first = services.datasets.register(ALICE, "ws", "d", "file", [blob("data/")])
    again = services.datasets.register(ALICE, "ws", "d", "file", [blob("data/")], create_new_version=True)
    assert again["existing"] and again["version"] == 1 and again["fingerprint"] == first["fingerprint"]
    with pytest.raises(Conflict) as taken:
        services.datasets.register(ALICE, "ws", "d", "file", [blob("data/one.csv")])
    assert taken.value.field == "create_new_version"
    time.sleep(0.01)  # a rewrite a moment later: a new tag (ETag or inode and mtime)
    put(backend, services, "workspaceblobstore", {"data/one.csv": b"2", "data/two.csv": b"22"})
    second = services.datasets.register(ALICE, "ws", "d", "file", [blob("data/")], create_new_version=True)
    assert (second["version"], second["file_count"], second["existing"]) == (2, 2, False)
    assert second["fingerprint"] != first["fingerprint"]
    assert [v["version"] for v in services.datasets.versions("ws", "d")] == [1, 2]
    assert services.datasets.get("ws", "d")["version"] == 2


def test_verify_reports_data_changed_under_a_version(backend, services):
    put(backend, services, "workspaceblobstore", {"v/a.csv": b"a", "v/b.csv": b"b"})
    services.datasets.register(ALICE, "ws", "watched", "file", [blob("v/")])
    assert services.datasets.verify("ws", "watched", 1)["matches"]
    time.sleep(0.01)
    put(backend, services, "workspaceblobstore", {"v/a.csv": b"A!", "v/c.csv": b"c"})
    services.ctx.blobs.delete(services.datastore_files.open("ws", "workspaceblobstore")[1] + "v/b.csv")
    report = services.datasets.verify("ws", "watched", 1)
    assert not report["matches"] and report["current_fingerprint"] != report["fingerprint"]
    assert (report["changed"], report["added"], report["removed"]) == (
        [blob("v/a.csv")], [blob("v/c.csv")], [blob("v/b.csv")])


def test_a_tabular_dataset_keeps_schema_rows_preview_and_profile(backend, services):
    put(backend, services, "workspaceblobstore", {"iris/part-1.csv": IRIS, "iris/part-2.csv": IRIS})
    made = services.datasets.register(ALICE, "ws", "iris", "tabular", [blob("iris/*.csv")])
    assert made["row_count"] == 6 and made["format"] == "delimited"
    assert made["schema"] == [{"name": "sepal_length", "type": "double"}, {"name": "sepal_width", "type": "double"},
                              {"name": "species", "type": "string"}]
    assert made["preview"]["rows"][0] == [5.1, 3.5, "setosa"]
    width = next(p for p in made["profile"] if p["name"] == "sepal_width")
    assert (width["missing"], width["min"], width["max"]) == (2, 3.0, 3.5)
    assert next(p for p in made["profile"] if p["name"] == "species")["distinct"] == 2
    assert services.datasets.get("ws", "iris", "latest")["profile"] == made["profile"]


def test_parquet_and_json_lines_and_a_separator(backend, services):
    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2, 3], "y": ["a", "b", None]}), sink)
    put(backend, services, "workspaceblobstore", {"t.parquet": sink.getvalue(), "t.jsonl": b'{"x": 1}\n{"x": 5}\n',
                                                  "t.tsv": b"a\tb\n1\t2\n"})
    assert services.datasets.register(ALICE, "ws", "pq", "tabular", [blob("t.parquet")], "parquet")["row_count"] == 3
    lines = services.datasets.register(ALICE, "ws", "jl", "tabular", [blob("t.jsonl")], "json_lines")
    assert lines["profile"][0]["max"] == 5
    tsv = services.datasets.register(ALICE, "ws", "tsv", "tabular", [blob("t.tsv")], options={"separator": "\t"})
    assert [c["name"] for c in tsv["schema"]] == ["a", "b"]


@pytest.mark.parametrize("files, kwargs, field, words", [
    ({"bad.csv": b"a,b\n1,2\n3,4,5\n"}, {}, "paths", "line 3"),
    ({"latin.csv": "name\nJos\u00e9\n".encode("latin-1")}, {}, "options.encoding", "encoding"),
    ({"ok.csv": b"a\n1\n"}, {"options": {"separator": ",,"}}, "options.separator", "one character"),
    ({"ok.csv": b"a\n1\n"}, {"options": {"quote": "'"}}, "options.quote", "unknown option"),
])
def test_data_that_does_not_read_is_refused_and_nothing_is_written(backend, services, files, kwargs, field, words):
    put(backend, services, "workspaceblobstore", files)
    with pytest.raises(Invalid) as refused:
        services.datasets.register(ALICE, "ws", "broken", "tabular", [blob(next(iter(files)))], **kwargs)
    assert refused.value.field == field and words in refused.value.message
    with pytest.raises(NotFound):
        services.datasets.get("ws", "broken")
    prefix = services.workspaces.record("ws")["blob_prefix"] + "datasets/"
    assert list(services.ctx.blobs.list_all(prefix)) == []


@pytest.mark.parametrize("paths, field", [
    ([blob("nothing/here/*.csv")], "paths[0].path"),
    ([blob("../up.csv")], "paths[0].path"),
    ([blob("/etc/passwd")], "paths[0].path"),
    ([blob("a\x00b")], "paths[0].path"),
    ([{"datastore": "nowhere", "path": "x.csv"}], "paths[0].datastore"),
    ([], "paths"),
])
def test_bad_paths_name_the_field(backend, services, paths, field):
    with pytest.raises((Invalid, NotFound)) as refused:
        services.datasets.register(ALICE, "ws", "d", "file", paths)
    assert refused.value.field == field


def test_concurrent_registrations_get_consecutive_versions(backend, services):
    put(backend, services, "workspaceblobstore", {f"c/{n}.csv": str(n).encode() for n in range(6)})
    errors = all_at_once(lambda n: services.datasets.register(ALICE, "ws", "raced", "file", [blob(f"c/{n}.csv")],
                                                              create_new_version=True), 6)
    assert errors == []
    assert [v["version"] for v in services.datasets.versions("ws", "raced")] == [1, 2, 3, 4, 5, 6]


def test_a_datastore_read_by_a_version_cannot_be_deleted_until_it_is_unregistered(backend, services, s3_transfers,
                                                                                  tmp_path):
    services.datastores.register(ALICE, "ws", "lake", "s3", {"bucket": s3_transfers.bucket, "prefix": tmp_path.name,
                                                             "endpoint_url": s3_transfers.url}, s3_transfers.keys)
    put(backend, services, "lake", {"rows.csv": b"a\n1\n"})
    made = services.datasets.register(ALICE, "ws", "lake_rows", "tabular", [{"datastore": "lake", "path": "rows.csv"}])
    assert made["row_count"] == 1
    with pytest.raises(Conflict) as refused:
        services.datastores.delete(ALICE, "ws", "lake")
    assert "lake_rows:1" in refused.value.message
    link = services.datasets.download("ws", "lake_rows", 1, [{"datastore": "lake", "path": "rows.csv"}])["downloads"]
    assert link[0]["url"].startswith(s3_transfers.url) and transfer(backend, services, "GET", link[0]["url"])[1] == b"a\n1\n"
    with pytest.raises(Invalid):
        services.datasets.download("ws", "lake_rows", 1, [{"datastore": "lake", "path": "other.csv"}])
    assert services.datasets.delete_version(ALICE, "ws", "lake_rows", 1)["deleted"]
    with pytest.raises(NotFound):
        services.datasets.get("ws", "lake_rows")
    assert services.datastores.delete(ALICE, "ws", "lake")["deleted"]


def test_unknown_datasets_and_versions_are_404s_naming_them(backend, services):
    with pytest.raises(NotFound) as unknown:
        services.datasets.get("ws", "ghost")
    assert "ghost" in unknown.value.message and unknown.value.field == "dataset"
    put(backend, services, "workspaceblobstore", {"g.csv": b"1"})
    services.datasets.register(ALICE, "ws", "real", "file", [blob("g.csv")])
    with pytest.raises(NotFound) as missing:
        services.datasets.get("ws", "real", 7)
    assert missing.value.field == "version"


def test_a_run_lists_the_versions_it_wrote_until_they_are_unregistered(backend, services):
    run = services.runs.create(ALICE, "ws", "exp", status="Running")
    as_run = Principal(user="alice", is_admin=False, token_id="t2", run_id=run["id"], workspace="ws")
    put(backend, services, "workspaceblobstore", {"out/clean.csv": b"x\n1\n"})
    made = services.datasets.register(as_run, "ws", "clean", "file", [blob("out/clean.csv")])
    lineage = services.datasets.of_run("ws", run["id"])
    assert lineage == {"run_id": run["id"], "inputs": [],
                       "outputs": [{"name": "clean", "version": 1, "fingerprint": made["fingerprint"]}]}
    services.datasets.delete_version(ALICE, "ws", "clean", 1)
    assert services.datasets.of_run("ws", run["id"])["outputs"] == []
    with pytest.raises(NotFound):
        services.datasets.of_run("ws", "no-such-run")
