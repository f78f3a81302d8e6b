"""Output files: presigned uploads and downloads, folders and zips."""
from __future__ import annotations

import io
import zipfile

import pytest

from nimbus import Experiment, InvalidError, NotFoundError
from nimbus.progress import ProgressBar


@pytest.fixture
def run(workspace):
    return Experiment(workspace, "files").start_logging()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 3}')
    (root / "weights" / "w.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (root / "empty.txt").write_bytes(b"")
    return root


def test_upload_file_from_path_and_stream_then_download(run, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("trained for 3 epochs\n")
    assert run.upload_file("outputs/notes.txt", source) == {"path": "outputs/notes.txt", "size": 21}
    assert run.upload_file("raw.bin", io.BytesIO(b"\x00\x01\x02")) == {"path": "raw.bin", "size": 3}
    assert run.get_file_names() == ["outputs/notes.txt", "raw.bin"]

    written = run.download_file("outputs/notes.txt", tmp_path / "out" / "copy.txt")
    assert (tmp_path / "out" / "copy.txt").read_text() == "trained for 3 epochs\n"
    assert written == str(tmp_path / "out" / "copy.txt")
    into_folder = run.download_file("raw.bin", tmp_path / "out")
    assert (tmp_path / "out" / "raw.bin").read_bytes() == b"\x00\x01\x02" and into_folder.endswith("raw.bin")


def test_upload_folder_then_download_files(run, folder, tmp_path):
    uploaded = run.upload_folder("model", folder)
    assert [u["path"] for u in uploaded] == ["model/config.json", "model/empty.txt", "model/weights/w.bin"]
    assert uploaded[2]["size"] == 1024 * 1024

    written = run.download_files(output_directory=tmp_path / "all")
    assert len(written) == 3
    for relative in ("config.json", "empty.txt", "weights/w.bin"):
        assert (tmp_path / "all" / "model" / relative).read_bytes() == (folder / relative).read_bytes()

    only = run.download_files(prefix="model/weights", output_directory=tmp_path / "some")
    assert only == [str(tmp_path / "some" / "model" / "weights" / "w.bin")]


def test_download_files_as_one_zip(run, folder, tmp_path):
    run.upload_folder("model", folder)
    archive = run.download_files(output_directory=tmp_path, as_zip=True)
    assert archive == str(tmp_path / f"{run.id}.zip")
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == ["model/config.json", "model/empty.txt", "model/weights/w.bin"]
        assert opened.read("model/weights/w.bin") == (folder / "weights" / "w.bin").read_bytes()


def test_missing_outputs_and_bad_paths(run, tmp_path):
    with pytest.raises(NotFoundError):
        run.download_file("nothing.txt", tmp_path / "x")
    with pytest.raises(InvalidError, match="relative"):
        run.upload_file("../escape.txt", io.BytesIO(b"x"))
    with pytest.raises(InvalidError):
        run.upload_folder("x", tmp_path / "not-a-folder")


def test_progress_bar_reports_to_its_stream():
    screen = io.StringIO()
    with ProgressBar(2048, "file", enabled=True, stream=screen) as bar:
        bar.update(1024)
        bar.update(1024)
    assert screen.getvalue().endswith("100% 2.0 KB/2.0 KB\n")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_redraws_on_a_terminal_only_and_elsewhere_writes_one_line(monkeypatch):
    monkeypatch.setattr("nimbus.progress.REDRAW_SECONDS", 0.0)  # every update would redraw
    log, terminal = io.StringIO(), Terminal()
    for stream in (log, terminal):
        with ProgressBar(3072, "snapshot", enabled=True, stream=stream) as bar:
            for _ in range(3):
                bar.update(1024)
    assert log.getvalue() == "snapshot [############################] 100% 3.0 KB/3.0 KB\n"
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().endswith("3.0 KB/3.0 KB\n")
