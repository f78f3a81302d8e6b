"""Snapshots: which files a folder contributes, their digests, limits, uploads and safe extraction."""
from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path

import pytest

from nimbus import snapshot
from nimbus.exceptions import InvalidError
from nimbus.snapshot import SnapshotError, collect, extract, safe_extract_zip, safe_target


def make(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def paths(root: Path, **limits) -> list[str]:
    return [f.path for f in collect(root, **limits)]


# --- ignore files ---------------------------------------------------------------------------------------
def test_gitignore_applies_when_there_is_no_amlignore(tmp_path):
    make(tmp_path, {".gitignore": "*.log\n", "a.py": "", "debug.log": ""})
    assert paths(tmp_path) == [".gitignore", "a.py"]


def test_amlignore_replaces_gitignore_when_both_exist(tmp_path):
    make(tmp_path, {".gitignore": "*.py\n", ".amlignore": "*.log\n", "a.py": "", "debug.log": ""})
    assert paths(tmp_path) == [".amlignore", ".gitignore", "a.py"]


def test_negation_re_includes_a_file(tmp_path):
    make(tmp_path, {".amlignore": "*.csv\n!keep.csv\n", "data.csv": "", "keep.csv": "", "sub/keep.csv": "",
                    "sub/other.csv": ""})
    assert paths(tmp_path) == [".amlignore", "keep.csv", "sub/keep.csv"]


def test_a_file_inside_an_ignored_folder_cannot_be_re_included(tmp_path):
    make(tmp_path, {".gitignore": "data/\n!data/keep.txt\n", "data/keep.txt": "", "main.py": ""})
    assert paths(tmp_path) == [".gitignore", "main.py"]


def test_directory_patterns_match_folders_only(tmp_path):
    make(tmp_path, {".gitignore": "build/\n/top\n", "build/out.bin": "", "src/build/x": "", "build.py": "",
                    "top/a": "", "src/top/b": ""})
    assert paths(tmp_path) == [".gitignore", "build.py", "src/top/b"]


def test_nested_ignore_files_apply_to_their_subtree(tmp_path):
    make(tmp_path, {".gitignore": "*.log\n", "sub/.gitignore": "/local.txt\n!keep.log\n", "a.log": "",
                    "local.txt": "", "sub/local.txt": "", "sub/keep.log": "", "sub/other.log": "",
                    "sub/deeper/local.txt": ""})
    assert paths(tmp_path) == [".gitignore", "local.txt", "sub/.gitignore", "sub/deeper/local.txt", "sub/keep.log"]


def test_the_choice_between_ignore_files_is_made_in_each_folder(tmp_path):
    make(tmp_path, {"sub/.gitignore": "*.txt\n", "sub/.amlignore": "*.bin\n", "sub/a.txt": "", "sub/b.bin": ""})
    assert paths(tmp_path) == ["sub/.amlignore", "sub/.gitignore", "sub/a.txt"]


def test_git_folder_is_always_skipped(tmp_path):
    make(tmp_path, {".git/config": "x", "sub/.git": "gitdir: elsewhere", "a.py": ""})
    assert paths(tmp_path) == ["a.py"]


# --- paths, digests, links ----------------------------------------------------------------------------------
def test_paths_are_relative_posix_and_sorted(tmp_path):
    make(tmp_path, {"b/c/d.py": "", "a.py": "", "b/a.py": ""})
    files = collect(tmp_path)
    assert [f.path for f in files] == ["a.py", "b/a.py", "b/c/d.py"]
    assert all(Path(f.abs_path).is_absolute() for f in files)


def test_digests_and_sizes_match_the_contents(tmp_path):
    big = os.urandom(snapshot.CHUNK * 2 + 17)  # several reads
    make(tmp_path, {"big.bin": big, "empty": b""})
    files = {f.path: f for f in collect(tmp_path)}
    assert files["big.bin"].digest == hashlib.sha256(big).hexdigest() and files["big.bin"].size == len(big)
    assert files["empty"].digest == hashlib.sha256(b"").hexdigest() and files["empty"].size == 0


def test_executable_bit_is_recorded(tmp_path):
    make(tmp_path, {"run.sh": "#!/bin/sh\n", "data.txt": ""})
    (tmp_path / "run.sh").chmod(0o755)
    assert {f.path: f.executable for f in collect(tmp_path)} == {"data.txt": False, "run.sh": True}


def test_link_outside_the_folder_is_refused_by_name(tmp_path):
    outside = make(tmp_path / "outside", {"secret.txt": "s"})
    source = make(tmp_path / "src", {"a.py": ""})
    (source / "leak.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(SnapshotError, match="leak.txt") as error:
        collect(source)
    assert isinstance(error.value, InvalidError)


def test_link_outside_is_accepted_when_ignored(tmp_path):
    outside = make(tmp_path / "outside", {"secret.txt": "s"})
    source = make(tmp_path / "src", {".amlignore": "leak.txt\n", "a.py": ""})
    (source / "leak.txt").symlink_to(outside / "secret.txt")
    assert paths(source) == [".amlignore", "a.py"]


def test_links_inside_are_followed_and_loops_stop(tmp_path):
    make(tmp_path, {"real/data.txt": "hello"})
    (tmp_path / "alias.txt").symlink_to(tmp_path / "real" / "data.txt")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "loop").symlink_to(tmp_path)
    files = {f.path: f for f in collect(tmp_path)}
    assert sorted(files) == ["alias.txt", "linked/data.txt", "real/data.txt"]
    assert files["alias.txt"].size == 5


def test_dangling_link_is_refused_by_name(tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SnapshotError, match="gone"):
        collect(tmp_path)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(SnapshotError, match="not a folder"):
        collect(tmp_path / "absent")


# --- limits ----------------------------------------------------------------------------------------------------
def test_too_many_bytes_names_the_limit_and_the_biggest(tmp_path, monkeypatch):
    sizes = {"data/huge.bin": 900, "data/big.bin": 800, "model.pt": 700, "a": 600, "b": 500, "c": 400, "small": 1}
    make(tmp_path, {name: b"x" * size for name, size in sizes.items()})
    monkeypatch.setattr(snapshot, "file_digest", lambda path: pytest.fail("read before the limits were checked"))
    with pytest.raises(SnapshotError) as error:
        collect(tmp_path, max_bytes=1000)
    message = str(error.value)
    assert "NIMBUS_SNAPSHOT_MAX_BYTES" in message and "1000 B" in message
    for name in ("data/huge.bin", "data/big.bin", "model.pt", "a (600 B)", "b (500 B)", "data/ (1.7 KB)"):
        assert name in message
    assert "c (400 B)" not in message and "small" not in message


def test_too_many_files_names_the_limit_and_the_fullest_folders(tmp_path):
    make(tmp_path, {**{f"node_modules/{i}.js": "" for i in range(8)}, **{f"src/{i}.py": "" for i in range(3)},
                    "main.py": ""})
    with pytest.raises(SnapshotError) as error:
        collect(tmp_path, max_files=10)
    message = str(error.value)
    assert "12 files" in message and "10" in message and "NIMBUS_SNAPSHOT_MAX_FILES" in message
    assert "node_modules/ (8 files)" in message and "src/ (3 files)" in message


def test_ignored_files_do_not_count_towards_limits(tmp_path):
    make(tmp_path, {".amlignore": "data/\n", "data/huge.bin": b"x" * 5000, "a.py": ""})
    assert paths(tmp_path, max_bytes=1000) == [".amlignore", "a.py"]


def test_limits_from_environment():
    assert snapshot.limits_from_env({}) == {"max_files": 2000, "max_bytes": 300 * 1024 * 1024}
    assert snapshot.limits_from_env({"NIMBUS_SNAPSHOT_MAX_FILES": "5", "NIMBUS_SNAPSHOT_MAX_BYTES": "9"}) == {
        "max_files": 5, "max_bytes": 9}


# --- upload --------------------------------------------------------------------------------------------------
class FakeStore:
    """Answers like the service: only the contents it lacks get URLs; remembers what was sent."""

    def __init__(self, stored: set[str] = frozenset()):
        self.stored, self.posts, self.puts = set(stored), [], []

    def post(self, path, body=None, *, retry=False):
        self.posts.append((path, body, retry))
        if path.endswith("/uploads"):
            return {"uploads": [{"digest": f["digest"], "url": f"https://blob/{f['digest']}"}
                                for f in body["files"] if f["digest"] not in self.stored]}
        return {"id": "f" * 64, "file_count": len(body["files"]), "total_bytes": sum(f["size"] for f in body["files"])}

    def upload(self, url, source, progress=None):
        data = source.read() if hasattr(source, "read") else Path(source).read_bytes()
        self.puts.append(url)
        self.stored.add(url.rsplit("/", 1)[1])
        if progress:
            progress(len(data))
        return len(data)


def test_upload_sends_only_missing_contents_once_then_the_manifest(tmp_path):
    make(tmp_path, {"a.txt": "same", "b.txt": "same", "c.txt": "stored already", "run.sh": "#!"})
    (tmp_path / "run.sh").chmod(0o755)
    files = collect(tmp_path)
    digest = {f.path: f.digest for f in files}
    store, moved = FakeStore({digest["c.txt"]}), []
    result = snapshot.upload(store, "ws 1", files, moved.append)
    assert sorted(store.puts) == sorted(f"https://blob/{digest[p]}" for p in ("a.txt", "run.sh"))
    assert result == {"id": "f" * 64, "file_count": 4, "total_bytes": 4 + 4 + 14 + 2, "uploaded_bytes": 4 + 2}
    assert sum(moved) == 4 + 14 + 2  # sent, plus what the store had: each distinct content once
    path, manifest, retry = store.posts[-1]
    assert path == "/v1/workspaces/ws%201/snapshots" and retry
    assert manifest["files"][-1] == {"path": "run.sh", "digest": digest["run.sh"], "size": 2, "executable": True}
    assert [f["path"] for f in manifest["files"]] == ["a.txt", "b.txt", "c.txt", "run.sh"]


def test_upload_asks_about_digests_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "DIGEST_BATCH", 2)
    make(tmp_path, {f"{i}.txt": str(i) for i in range(5)})
    store = FakeStore()
    result = snapshot.upload(store, "ws", collect(tmp_path))
    asked = [len(body["files"]) for path, body, _ in store.posts if path.endswith("/uploads")]
    assert asked == [2, 2, 1] and len(store.puts) == 5 and result["uploaded_bytes"] == 5


# --- writing out ----------------------------------------------------------------------------------------------
class FakeDownloads:
    def __init__(self, contents: dict[str, bytes]):
        self.contents = contents

    def download(self, url, destination, progress=None):
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_bytes(self.contents[url])
        return len(self.contents[url])


@pytest.mark.parametrize("bad", ["../evil", "a/../../evil", "/etc/passwd", "C:/x", "a\\..\\b", "a//b", "./a", ""])
def test_extract_refuses_paths_leaving_the_target(tmp_path, bad):
    client = FakeDownloads({"u": b"x", "ok": b"y"})
    with pytest.raises(SnapshotError, match="refusing"):
        extract([{"path": "fine.txt", "url": "ok"}, {"path": bad, "url": "u"}], tmp_path / "job", client)
    assert not (tmp_path / "job" / "fine.txt").exists()  # nothing written when any path is bad


def test_extract_refuses_a_path_through_a_link_out_of_the_target(tmp_path):
    target = tmp_path / "job"
    target.mkdir()
    (target / "out").symlink_to(tmp_path)
    with pytest.raises(SnapshotError, match="outside"):
        safe_target(target, "out/evil")


def test_extract_writes_files_with_their_executable_bit(tmp_path):
    client = FakeDownloads({"u1": b"print(1)", "u2": b"#!/bin/sh"})
    files = [{"path": "pkg/main.py", "url": "u1", "digest": hashlib.sha256(b"print(1)").hexdigest()},
             {"path": "run.sh", "url": "u2", "executable": True}]
    written = extract(files, tmp_path, client)
    assert written == [str(tmp_path.resolve() / "pkg/main.py"), str(tmp_path.resolve() / "run.sh")]
    assert (tmp_path / "pkg/main.py").read_bytes() == b"print(1)"
    assert os.stat(tmp_path / "run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(tmp_path / "pkg/main.py").st_mode & stat.S_IXUSR


def test_extract_refuses_content_not_matching_its_digest(tmp_path):
    client = FakeDownloads({"u": b"tampered"})
    with pytest.raises(SnapshotError, match="digest"):
        extract([{"path": "a.py", "url": "u", "digest": hashlib.sha256(b"original").hexdigest()}], tmp_path, client)
    assert not (tmp_path / "a.py").exists()


def test_zip_slip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("fine.txt", "ok")
        out.writestr("../evil.txt", "gotcha")
    with pytest.raises(SnapshotError, match="evil.txt"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "fine.txt").exists()


def test_zip_with_an_absolute_entry_is_refused(tmp_path):
    archive = tmp_path / "abs.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr(zipfile.ZipInfo("/tmp/abs.txt"), "x")
    with pytest.raises(SnapshotError):
        safe_extract_zip(archive, tmp_path / "out")


def test_safe_zip_extracts_folders_files_and_executable_bits(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("pkg/", "")
        out.writestr("pkg/a.py", "a")
        script = zipfile.ZipInfo("run.sh")
        script.external_attr = 0o755 << 16
        out.writestr(script, "#!/bin/sh")
    written = safe_extract_zip(archive, tmp_path / "out")
    assert sorted(Path(p).name for p in written) == ["a.py", "run.sh"]
    assert (tmp_path / "out/pkg/a.py").read_text() == "a"
    assert os.stat(tmp_path / "out/run.sh").st_mode & stat.S_IXUSR
