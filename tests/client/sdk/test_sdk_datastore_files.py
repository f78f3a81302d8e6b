"""A datastore's files through the SDK: upload (folders, files, big files in parts), list and download, on
the built-in datastore, an S3-compatible one and a local folder, over the local platform's real HTTP."""
from __future__ import annotations

import os

import pytest

from chalicelib.services import datastore_files
from nimbus import Datastore
from nimbus.exceptions import NimbusError

FOLDER = {"train.csv": b"a,b\n1,2\n", "test.csv": b"a,b\n3,4\n", "images/cat.png": b"\x89PNG cat"}


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """The root the platform lets local datastores live under (set before the platform starts)."""
    root = tmp_path / "shared"
    (root / "team").mkdir(parents=True)
    monkeypatch.setenv("NIMBUS_DATASTORE_ROOTS", str(root))
    return root


def write(folder, files: dict[str, bytes]):
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return folder


def read(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_goes_up_and_comes_back_down(workspace, tmp_path, capsys):
    source = write(tmp_path / "data", FOLDER)
    (source / "out.txt").symlink_to(tmp_path)  # a link out of the folder: never followed
    blob = workspace.get_default_datastore()
    sent = blob.upload(source, target_path="iris", show_progress=True)
    assert sorted(f["path"] for f in sent) == sorted(f"iris/{p}" for p in FOLDER)
    assert "not uploaded" in capsys.readouterr().err
    assert [f["path"] for f in blob.list_files("iris/images/")] == ["iris/images/cat.png"]
    assert blob.download(tmp_path / "copy", prefix="iris") == 3
    assert read(tmp_path / "copy" / "iris") == FOLDER
    # Nothing changed: a second upload skips every file, a second download writes none.
    assert blob.upload(source, target_path="iris") == []
    assert blob.download(tmp_path / "copy", prefix="iris") == 0


def test_upload_files_keep_paths_relative_to_their_root(workspace, tmp_path):
    source = write(tmp_path / "data", FOLDER)
    blob = workspace.get_default_datastore()
    blob.upload_files([source / "train.csv", source / "images" / "cat.png"], relative_root=source, target_path="raw")
    blob.upload_files([source / "test.csv"], target_path="flat")
    assert [f["path"] for f in blob.list_files()] == ["flat/test.csv", "raw/images/cat.png", "raw/train.csv"]
    with pytest.raises(NimbusError):
        blob.upload_files([tmp_path / "elsewhere.csv"])


def test_overwrite_replaces_what_the_datastore_holds(workspace, tmp_path):
    blob = workspace.get_default_datastore()
    blob.upload(write(tmp_path / "v1", {"x.csv": b"one"}))
    assert blob.upload(write(tmp_path / "v2", {"x.csv": b"two"})) == []
    blob.upload(tmp_path / "v2", overwrite=True)
    blob.download(tmp_path / "got", overwrite=True)
    assert (tmp_path / "got" / "x.csv").read_bytes() == b"two"


def test_a_big_file_goes_in_parts_to_an_s3_datastore(workspace, s3_transfers, tmp_path, monkeypatch):
    monkeypatch.setattr(datastore_files, "MULTIPART_FROM", 6 * 2**20)
    monkeypatch.setattr(datastore_files, "PART_SIZE", 5 * 2**20)
    lake = Datastore.register_s3(workspace, "lake", s3_transfers.bucket, prefix=tmp_path.name,
                                 endpoint_url=s3_transfers.url, access_key_id=s3_transfers.access_key_id,
                                 secret_access_key=s3_transfers.secret_access_key)
    data = os.urandom(12 * 2**20 + 7)
    write(tmp_path / "big", {"weights.bin": data, "small.txt": b"s"})
    lake.upload(tmp_path / "big")
    stored = s3_transfers.client().get_object(Bucket=s3_transfers.bucket, Key=f"{tmp_path.name}/weights.bin")
    assert stored["ContentLength"] == len(data)
    lake.download(tmp_path / "back")
    assert read(tmp_path / "back") == {"weights.bin": data, "small.txt": b"s"}


def test_a_failed_part_aborts_the_upload(workspace, s3_transfers, tmp_path, monkeypatch):
    monkeypatch.setattr(datastore_files, "MULTIPART_FROM", 6 * 2**20)
    monkeypatch.setattr(datastore_files, "PART_SIZE", 5 * 2**20)
    lake = Datastore.register_s3(workspace, "lake", s3_transfers.bucket, prefix=tmp_path.name,
                                 endpoint_url=s3_transfers.url, access_key_id=s3_transfers.access_key_id,
                                 secret_access_key=s3_transfers.secret_access_key)
    write(tmp_path / "big", {"weights.bin": os.urandom(11 * 2**20)})

    def refused(*args, **kwargs):
        raise NimbusError("the network went away")

    monkeypatch.setattr(workspace.client, "upload_part", refused)
    with pytest.raises(NimbusError, match="went away"):
        lake.upload(tmp_path / "big")
    assert lake.list_files() == []
    pending = s3_transfers.client().list_multipart_uploads(Bucket=s3_transfers.bucket, Prefix=tmp_path.name)
    assert pending.get("Uploads", []) == []


def test_a_local_datastore_moves_files_in_its_folder(roots, platform, workspace, tmp_path):
    team = Datastore.register_local(workspace, "team", str(roots / "team"))
    team.upload(write(tmp_path / "data", FOLDER), target_path="2026")
    assert read(roots / "team" / "2026") == FOLDER  # the files are where the folder is, nowhere else
    (roots / "team" / "added-by-hand.txt").write_bytes(b"hand")
    assert [f["path"] for f in team.list_files()][0] == "2026/images/cat.png"
    team.download(tmp_path / "copy")
    assert read(tmp_path / "copy") == {**{f"2026/{p}": d for p, d in FOLDER.items()}, "added-by-hand.txt": b"hand"}
