"""Datasets through the SDK, in Azure ML v1's names, over the local platform's real HTTP."""
from __future__ import annotations

import pytest

from nimbus import Dataset
from nimbus.exceptions import ConflictError, InvalidError, NotFoundError

IRIS = "sepal_length,sepal_width,species\n" + "".join(
    f"{4 + n / 10:.1f},{3 + (n % 5) / 10:.1f},{'setosa' if n % 2 else 'virginica'}\n" for n in range(40))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NIMBUS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def upload(datastore, tmp_path, files: dict[str, str | bytes]):
    source = tmp_path / "upload"
    for path, data in files.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(data if isinstance(data, bytes) else data.encode())
    datastore.upload(source, overwrite=True)


def test_a_tabular_dataset_from_registration_to_a_dataframe(workspace, tmp_path):
    blob = workspace.get_default_datastore()
    upload(blob, tmp_path, {"iris/iris.csv": IRIS})
    iris = Dataset.Tabular.from_delimited_files([(blob, "iris/iris.csv")]).register(workspace, "iris")
    assert (iris.name, iris.version, iris.row_count) == ("iris", 1, 40)
    assert [c["name"] for c in iris.schema] == ["sepal_length", "sepal_width", "species"]
    assert {p["name"]: p["distinct"] for p in iris.get_profile()}["species"] == 2
    found = Dataset.get_by_name(workspace, "iris")
    frame = found.to_pandas_dataframe()
    assert frame.shape == (40, 3) and list(frame.columns) == ["sepal_length", "sepal_width", "species"]
    assert len(found.take(5).to_pandas_dataframe()) == 5
    train, test = found.random_split(0.75, seed=7)
    first, second = train.to_pandas_dataframe(), test.to_pandas_dataframe()
    assert len(first) + len(second) == 40 and 0 < len(second) < len(first)
    assert train.to_pandas_dataframe().equals(first)  # the same seed, the same split
    with pytest.raises(InvalidError):
        found.take(5).register(workspace, "five")
    assert set(workspace.datasets) == {"iris"}


def test_a_file_dataset_downloads_once_per_machine(workspace, tmp_path, monkeypatch):
    blob = workspace.get_default_datastore()
    upload(blob, tmp_path, {"pets/a/cat.png": b"cat", "pets/b/dog.png": b"dog", "pets/notes.txt": b"n"})
    pets = Dataset.File.from_files(path=[(blob, "pets/**/*.png")]).register(workspace, "pets")
    assert sorted(pets.to_path()) == ["pets/a/cat.png", "pets/b/dog.png"]
    written = pets.download(tmp_path / "one")
    assert sorted(open(p, "rb").read() for p in written) == [b"cat", b"dog"]
    calls = []
    original = workspace.client.download
    monkeypatch.setattr(workspace.client, "download", lambda *a, **k: calls.append(a) or original(*a, **k))
    pets.download(tmp_path / "two")
    assert calls == []  # from the cache: nothing crossed the network
    assert (tmp_path / "two" / "pets" / "a" / "cat.png").read_bytes() == b"cat"


def test_versions_verify_and_the_same_data_again(workspace, tmp_path):
    blob = workspace.get_default_datastore()
    upload(blob, tmp_path, {"v/a.csv": "a\n1\n"})
    first = Dataset.File.from_files((blob, "v/")).register(workspace, "v")
    assert Dataset.File.from_files((blob, "v/")).register(workspace, "v").version == 1
    assert first.verify()["matches"]
    upload(blob, tmp_path, {"v/b.csv": "b\n2\n"})
    report = first.verify()
    assert not report["matches"] and report["added"] == [{"datastore": "workspaceblobstore", "path": "v/b.csv"}]
    with pytest.raises(ConflictError):
        Dataset.File.from_files((blob, "v/")).register(workspace, "v")
    second = Dataset.File.from_files((blob, "v/")).register(workspace, "v", create_new_version=True)
    assert second.version == 2 and [d.version for d in Dataset.versions(workspace, "v")] == [1, 2]
    second.unregister()
    assert Dataset.get_by_name(workspace, "v").version == 1
    with pytest.raises(NotFoundError):
        Dataset.get_by_name(workspace, "v", version=2)


def test_paths_must_be_datastore_pairs(workspace):
    with pytest.raises(InvalidError):
        Dataset.File.from_files(["just/a/path.csv"])
    with pytest.raises(NotFoundError) as unknown:
        Dataset.File.from_files(("nowhere", "x.csv")).register(workspace, "x")
    assert "nowhere" in str(unknown.value)
