"""A run's output files, moved straight to and from storage through presigned URLs."""
from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

from nimbus.client import api_path
from nimbus.exceptions import InvalidError
from nimbus.progress import ProgressBar, wanted
from nimbus.snapshot import extract
from nimbus.transfers import folder_files, inside, open_no_follow, parallel

if TYPE_CHECKING:
    from nimbus.workspace import Workspace

PRESIGN_BATCH = 500  # the service signs at most this many paths per request


class RunOutputs:
    """Mixed into Run."""

    workspace: "Workspace"
    id: str

    # --- uploads ----------------------------------------------------------------------------------
    def upload_file(self, name: str, path_or_stream: str | os.PathLike | BinaryIO,
                    show_progress: bool | None = None) -> dict:
        """Stores a local file (or a binary stream) as the run's output `name`."""
        url = self._upload_urls([name])[0]["url"]
        size = os.path.getsize(path_or_stream) if isinstance(path_or_stream, (str, os.PathLike)) else 0
        with ProgressBar(size, name, enabled=wanted(show_progress)) as bar:
            sent = self.workspace.client.upload(url, path_or_stream, bar.update)
        return {"path": name, "size": sent}

    def upload_folder(self, name: str, path: str | os.PathLike, show_progress: bool | None = None) -> list[dict]:
        """Stores every file under a local folder as outputs under `name/`, keeping relative paths.

        A link is stored as the file it points to when that file is inside the folder; a link out of the
        folder, to a folder or to nothing is never followed: it is left out, with a warning on stderr.
        (A run's script writes its outputs, and a link to a file of the machine must not publish it.)"""
        root = Path(path)
        if not root.is_dir():
            raise InvalidError(f"{str(root)!r} is not a folder")
        prefix = name.strip("/")
        found, left_out = folder_files(root)
        for relative in left_out:
            print(f"nimbus: {root / relative} is a link out of {root} (or to a folder): not uploaded", file=sys.stderr)
        targets = [f"{prefix}/{relative}" if prefix else relative for relative, _ in found]
        files = [source for _, source in found]
        sizes: list[int] = []
        with ProgressBar(sum(p.stat().st_size for p in files), name or ".", enabled=wanted(show_progress)) as bar:
            for start in range(0, len(files), PRESIGN_BATCH):  # signed just before use: the URLs expire
                urls = [u["url"] for u in self._upload_urls(targets[start:start + PRESIGN_BATCH])]
                jobs = zip(urls, files[start:start + PRESIGN_BATCH])
                sizes += parallel(lambda job: self._upload_file(job[0], job[1], bar.update), jobs)
        return [{"path": target, "size": size} for target, size in zip(targets, sizes)]

    def _upload_file(self, url: str, source: Path, progress: Callable[[int], None]) -> int:
        with open_no_follow(source) as stream:
            return self.workspace.client.upload(url, stream, progress)

    def _upload_urls(self, paths: list[str]) -> list[dict]:
        return self.workspace.client.post(self._outputs_path("uploads"), {"paths": paths}, retry=True)["uploads"]

    # --- listing and downloads --------------------------------------------------------------------
    def get_file_names(self, prefix: str = "") -> list[str]:
        return [f["path"] for f in self.list_files(prefix)]

    def list_files(self, prefix: str = "") -> list[dict]:
        """The run's outputs under `prefix`: [{path, size, modified}], in path order."""
        params = {"prefix": prefix, "max_results": 1000} if prefix else {"max_results": 1000}
        return list(self.workspace.client.paged(self._outputs_path(), "files", params))

    def download_file(self, name: str, output_file_path: str | os.PathLike | None = None,
                      show_progress: bool | None = None) -> str:
        """Downloads one output; into a folder when `output_file_path` is one. Returns the file's path."""
        target = Path(output_file_path) if output_file_path is not None else Path(Path(name).name)
        if target.is_dir():
            target = target / Path(name).name
        link = self.workspace.client.get(self._outputs_path("download"), path=name)
        with ProgressBar(link.get("size", 0), name, enabled=wanted(show_progress)) as bar:
            self.workspace.client.download(link["url"], target, bar.update)
        return str(target)

    def download_files(self, prefix: str = "", output_directory: str | os.PathLike = ".", as_zip: bool = False,
                       show_progress: bool | None = None) -> list[str] | str:
        """Downloads every output under `prefix`, keeping paths; returns the files written.

        With as_zip, writes them into one `<run id>.zip` in output_directory and returns its path.
        """
        files = self.list_files(prefix)
        directory = Path(output_directory)
        directory.mkdir(parents=True, exist_ok=True)
        with ProgressBar(sum(f["size"] for f in files), prefix or self.id, enabled=wanted(show_progress)) as bar:
            if as_zip:
                return self._download_zip(files, directory / f"{self.id}.zip", bar.update)
            jobs = [(f["path"], inside(directory, f["path"])) for f in files]
            parallel(lambda job: self._download_one(job[0], job[1], bar.update), jobs)
        return [str(target) for _, target in jobs]

    def _download_one(self, name: str, target: Path, progress: Callable[[int], None]) -> int:
        link = self.workspace.client.get(self._outputs_path("download"), path=name)
        return self.workspace.client.download(link["url"], target, progress)

    def _download_zip(self, files: list[dict], target: Path, progress: Callable[[int], None]) -> str:
        client = self.workspace.client
        entries = []
        for item in files:
            entry = zipfile.ZipInfo(item["path"], _zip_time(item.get("modified")))
            entry.compress_type = zipfile.ZIP_DEFLATED
            link = (lambda path=item["path"]: client.get(self._outputs_path("download"), path=path)["url"])
            entries.append((entry, item["size"], link))
        return client.download_zip(entries, target, progress)

    def _outputs_path(self, *more: str) -> str:
        return api_path("workspaces", self.workspace.name, "runs", self.id, "outputs", *more)


def _zip_time(modified: float | None) -> tuple:
    moment = datetime.fromtimestamp(modified) if modified else datetime.now()
    return max(moment, datetime(1980, 1, 1)).timetuple()[:6]


def download_snapshot(run, output_directory: str | os.PathLike = ".", as_zip: bool = False) -> list[str] | str:
    """The code a submitted run executed: its snapshot, as files under output_directory or one zip."""
    snapshot_id = run.get_details().get("snapshot_id")
    if not snapshot_id:
        raise InvalidError(f"run {run.id} was not submitted from a folder: it has no snapshot")
    client = run.workspace.client
    files = client.get(api_path("workspaces", run.workspace.name, "snapshots", snapshot_id, "downloads"))["files"]
    directory = Path(output_directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not as_zip:
        extract(files, directory, client)
        return [str(directory / f["path"]) for f in files]
    target = directory / f"{run.id}-snapshot.zip"
    with tempfile.TemporaryDirectory() as scratch:
        extract(files, scratch, client)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for item in files:
                archive.write(Path(scratch) / item["path"], item["path"])
    return str(target)
