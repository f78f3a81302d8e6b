"""A datastore's files over both backends: the built-in datastore, an S3-compatible one (moto's server, signed
with the datastore's own keys) and a local folder; bytes only ever through presigned URLs."""
from __future__ import annotations

import dataclasses
import os

import pytest

from chalicelib.errors import Forbidden, Invalid, NotFound
from chalicelib.services import datastore_files
from chalicelib.services.identity import Principal
from chalicelib.wiring import build_services
from tests.server.api.helpers import exchange, transfer

ALICE = Principal(user="alice", is_admin=False, token_id="t1")
ADMIN = Principal(user="admin", is_admin=True, token_id="t0")
FILES = {"train.csv": b"a,b\n1,2\n", "images/cat.png": b"\x89PNG cat", "images/dog.png": b"\x89PNG dog"}


@pytest.fixture
def services(settings, tmp_path):
    root = tmp_path / "shared"
    (root / "team").mkdir(parents=True)
    built = build_services(dataclasses.replace(settings, datastore_roots=(str(root),)))
    for name in ("alice", "admin"):
        built.identity.create_user(name, is_admin=name == "admin")
    built.workspaces.create(ALICE, "ws")
    built.workspaces.add_member(ALICE, "ws", "admin", "contributor")
    return built


@pytest.fixture(params=["workspaceblobstore", "research", "team"])
def datastore(request, services, settings, tmp_path) -> str:
    """Each type of datastore; `team` is a local folder, on the local platform only."""
    if request.param == "research":
        store = request.getfixturevalue("s3_transfers")
        services.datastores.register(ALICE, "ws", "research", "s3", {"bucket": store.bucket, "endpoint_url": store.url,
                                                                     "prefix": f"{tmp_path.name}/data"}, store.keys)
    elif request.param == "team":
        if settings.backend != "local":
            pytest.skip("local datastores exist on the local platform only")
        services.datastores.register(ADMIN, "ws", "team", "local", {"path": str(tmp_path / "shared" / "team")})
    return request.param


def upload(backend, services, datastore: str, files: dict[str, bytes], target: str = "", overwrite: bool = False):
    listed = [{"path": path, "size": len(data)} for path, data in files.items()]
    answer = services.datastore_files.upload("ws", datastore, listed, target, overwrite)
    for item in answer["uploads"]:
        relative = item["path"][len(target) + 1:] if target else item["path"]
        assert transfer(backend, services, "PUT", item["url"], files[relative])[0] == 200, item
    return answer


def test_uploaded_files_are_listed_and_downloaded_through_presigned_urls(backend, services, datastore):
    answer = upload(backend, services, datastore, FILES, target="raw")
    assert sorted(u["path"] for u in answer["uploads"]) == sorted(f"raw/{p}" for p in FILES)
    assert answer["skipped"] == []
    listed = services.datastore_files.list("ws", datastore)
    assert [(f["path"], f["size"]) for f in listed["files"]] == sorted((f"raw/{p}", len(d)) for p, d in FILES.items())
    assert [f["path"] for f in services.datastore_files.list("ws", datastore, "raw/images/")["files"]] == [
        "raw/images/cat.png", "raw/images/dog.png"]
    links = services.datastore_files.download("ws", datastore, ["raw/train.csv", "raw/images/dog.png"])["downloads"]
    assert [(link["path"], link["size"]) for link in links] == [("raw/train.csv", 8), ("raw/images/dog.png", 8)]
    for link in links:
        assert transfer(backend, services, "GET", link["url"]) == (200, FILES[link["path"][4:]])


def test_listing_pages_follow_each_other(backend, services, datastore):
    upload(backend, services, datastore, {f"part-{n:02}.txt": b"x" * n for n in range(5)})
    first = services.datastore_files.list("ws", datastore, max_results=2)
    assert [f["path"] for f in first["files"]] == ["part-00.txt", "part-01.txt"] and first["next_page_token"]
    rest = services.datastore_files.list("ws", datastore, max_results=10, page_token=first["next_page_token"])
    assert [f["path"] for f in rest["files"]] == ["part-02.txt", "part-03.txt", "part-04.txt"]
    assert rest["next_page_token"] is None


def test_without_overwrite_a_file_the_datastore_holds_is_skipped(backend, services, datastore):
    upload(backend, services, datastore, {"train.csv": b"old"})
    again = services.datastore_files.upload("ws", datastore, [{"path": "train.csv", "size": 3},
                                                              {"path": "test.csv", "size": 3}])
    assert again["skipped"] == ["train.csv"] and [u["path"] for u in again["uploads"]] == ["test.csv"]
    upload(backend, services, datastore, {"train.csv": b"new"}, overwrite=True)
    link = services.datastore_files.download("ws", datastore, ["train.csv"])["downloads"][0]
    assert transfer(backend, services, "GET", link["url"]) == (200, b"new")


@pytest.mark.parametrize("files, target, field", [
    ([{"path": "../escape.txt", "size": 1}], "", "files[0].path"),
    ([{"path": "/etc/passwd", "size": 1}], "", "files[0].path"),
    ([{"path": "ok.txt", "size": -1}], "", "files[0].size"),
    ([{"path": "ok.txt", "size": True}], "", "files[0].size"),
    ([{"path": "ok.txt", "size": 1}], "../up", "target_path"),
    ([], "", "files"),
])
def test_bad_uploads_name_the_field(services, files, target, field):
    with pytest.raises(Invalid) as refused:
        services.datastore_files.upload("ws", "workspaceblobstore", files, target)
    assert refused.value.field == field


def test_a_missing_file_or_datastore_is_a_404_naming_it(services):
    with pytest.raises(NotFound) as missing:
        services.datastore_files.download("ws", "workspaceblobstore", ["nothing.csv"])
    assert "nothing.csv" in missing.value.message
    with pytest.raises(NotFound) as unknown:
        services.datastore_files.list("ws", "elsewhere")
    assert unknown.value.field == "datastore"


def test_the_built_in_datastore_holds_its_files_apart_from_the_platforms(backend, services):
    """Its root is a folder of the workspace's prefix: runs' outputs and models are never among its files."""
    run = services.runs.create(ALICE, "ws", "exp", status="Running")
    for item in services.outputs.upload_urls("ws", run["id"], ["outputs/model.bin"]):
        transfer(backend, services, "PUT", item["url"], b"weights")
    assert services.datastore_files.list("ws", "workspaceblobstore")["files"] == []
    upload(backend, services, "workspaceblobstore", {"mine.txt": b"1"})
    assert [f["path"] for f in services.datastore_files.list("ws", "workspaceblobstore")["files"]] == ["mine.txt"]


def test_an_s3_datastore_signs_with_its_own_keys_under_its_prefix(backend, services, s3_transfers, tmp_path):
    prefix = f"{tmp_path.name}/keyed"
    services.datastores.register(ALICE, "ws", "research", "s3", {"bucket": s3_transfers.bucket, "prefix": prefix,
                                                                 "endpoint_url": s3_transfers.url}, s3_transfers.keys)
    item = upload(backend, services, "research", {"a.txt": b"A"})["uploads"][0]
    assert item["url"].startswith(s3_transfers.url) and s3_transfers.access_key_id in item["url"]
    assert s3_transfers.secret_access_key not in item["url"]
    stored = s3_transfers.client().get_object(Bucket=s3_transfers.bucket, Key=f"{prefix}/a.txt")["Body"].read()
    assert stored == b"A"


def test_big_files_go_in_parts_on_an_s3_datastore(backend, services, s3_transfers, tmp_path, monkeypatch):
    monkeypatch.setattr(datastore_files, "MULTIPART_FROM", 6 * 2**20)
    monkeypatch.setattr(datastore_files, "PART_SIZE", 5 * 2**20)  # S3's smallest part but the last
    services.datastores.register(ALICE, "ws", "research", "s3", {"bucket": s3_transfers.bucket,
                                                                 "prefix": tmp_path.name,
                                                                 "endpoint_url": s3_transfers.url}, s3_transfers.keys)
    data = os.urandom(11 * 2**20)
    answer = services.datastore_files.upload("ws", "research", [{"path": "big.bin", "size": len(data)},
                                                                {"path": "small.bin", "size": 3}])
    big, small = answer["uploads"]
    assert "url" in small and "url" not in big
    assert (big["part_size"], big["part_count"]) == (5 * 2**20, 3)
    urls = services.datastore_files.part_urls("ws", "research", "big.bin", big["upload_id"], [1, 2, 3])["parts"]
    parts = []
    for part in urls:
        start = (part["part_number"] - 1) * big["part_size"]
        status, _, headers = exchange(backend, services, "PUT", part["url"], data[start:start + big["part_size"]])
        assert status == 200
        parts.append({"part_number": part["part_number"], "etag": headers["ETag"]})
    assert services.datastore_files.list("ws", "research")["files"] == []  # nothing until it is completed
    assert services.datastore_files.complete("ws", "research", "big.bin", big["upload_id"], parts) == {
        "path": "big.bin", "size": len(data)}
    link = services.datastore_files.download("ws", "research", ["big.bin"])["downloads"][0]
    assert transfer(backend, services, "GET", link["url"]) == (200, data)


def test_an_aborted_upload_leaves_no_file(backend, services, s3_transfers, tmp_path, monkeypatch):
    monkeypatch.setattr(datastore_files, "MULTIPART_FROM", 10)
    services.datastores.register(ALICE, "ws", "research", "s3", {"bucket": s3_transfers.bucket,
                                                                 "prefix": tmp_path.name,
                                                                 "endpoint_url": s3_transfers.url}, s3_transfers.keys)
    big = services.datastore_files.upload("ws", "research", [{"path": "big.bin", "size": 100}])["uploads"][0]
    assert services.datastore_files.abort("ws", "research", "big.bin", big["upload_id"]) == {
        "path": "big.bin", "aborted": True}
    assert services.datastore_files.list("ws", "research")["files"] == []
    with pytest.raises(Invalid) as bad:
        services.datastore_files.complete("ws", "research", "big.bin", big["upload_id"],
                                          [{"part_number": 2, "etag": "x"}])
    assert bad.value.field == "parts[0].part_number"


def test_a_store_without_parts_refuses_a_file_over_one_upload(services, settings):
    if settings.backend != "local":
        pytest.skip("the platform's S3 takes big files in parts")
    with pytest.raises(Invalid) as refused:
        services.datastore_files.upload("ws", "workspaceblobstore", [{"path": "huge.bin", "size": 6 * 1024 ** 3}])
    assert refused.value.field == "files[0].size"


def test_a_local_datastore_never_serves_a_link_out_of_its_folder(backend, services, settings, tmp_path):
    if settings.backend != "local":
        pytest.skip("local datastores exist on the local platform only")
    team = tmp_path / "shared" / "team"
    services.datastores.register(ADMIN, "ws", "team", "local", {"path": str(team)})
    (tmp_path / "private.txt").write_text("not for the workspace")
    (team / "link.txt").symlink_to(tmp_path / "private.txt")
    (team / "linked").symlink_to(tmp_path)
    assert services.datastore_files.list("ws", "team")["files"] == []
    for path in ("link.txt", "linked/private.txt"):
        with pytest.raises(Forbidden):
            services.datastore_files.download("ws", "team", [path])


def test_a_url_for_one_local_store_is_refused_by_another(backend, services, settings, tmp_path):
    if settings.backend != "local":
        pytest.skip("local datastores exist on the local platform only")
    services.datastores.register(ADMIN, "ws", "team", "local", {"path": str(tmp_path / "shared" / "team")})
    upload(backend, services, "team", {"same.txt": b"team"})
    services.ctx.blobs.put_bytes("same.txt", b"the platform's")
    team_url = services.datastore_files.download("ws", "team", ["same.txt"])["downloads"][0]["url"]
    assert transfer(backend, services, "GET", team_url) == (200, b"team")
    # The team store's signature for its key, on the platform store's path for the same key.
    forged = f"{settings.public_url}/blobs/same.txt?{team_url.split('?', 1)[1]}"
    assert transfer(backend, services, "GET", forged)[0] == 403
