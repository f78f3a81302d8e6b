"""A datastore's files, moved straight between this machine and the store through presigned URLs.

    blob = ws.get_default_datastore()
    blob.upload("./data", target_path="iris", overwrite=True)     # a folder, with a progress bar
    blob.upload_files(["a.csv", "b.csv"], target_path="raw")
    blob.download("./copy", prefix="iris")                         # returns how many files it wrote
    blob.list_files("iris/")

The service only signs: big files on S3 go in parts (each part's URL asked for just before it is sent),
and an upload that fails part-way is aborted, so no half-written file appears.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from nimbus.exceptions import InvalidError
from nimbus.progress import ProgressBar, wanted
from nimbus.transfers import folder_files, inside, open_no_follow, parallel

if TYPE_CHECKING:
    from nimbus.workspace import Workspace

BATCH = 500  # the service signs at most this many files (or parts) per request


class DatastoreFiles:
    """Mixed into Datastore."""

    workspace: "Workspace"
    name: str
    _path: Callable[..., str]  # the API path of the datastore, and of what is under it

    # --- uploads ----------------------------------------------------------------------------------
    def upload(self, src_dir: str | os.PathLike, target_path: str | None = None, overwrite: bool = False,
               show_progress: bool | None = None) -> list[dict]:
        """Every file under a local folder, to `target_path` on the datastore, keeping relative paths.
        Without `overwrite` a file the datastore already holds is skipped. A link out of the folder is
        never followed: it is left out, with a warning. Returns the files sent: [{path, size}]."""
        root = Path(src_dir)
        if not root.is_dir():
            raise InvalidError(f"{str(root)!r} is not a folder")
        found, left_out = folder_files(root)
        for relative in left_out:
            print(f"nimbus: {root / relative} is a link out of {root} (or to a folder): not uploaded", file=sys.stderr)
        return self._upload(found, target_path, overwrite, show_progress)

    def upload_files(self, files: Iterable[str | os.PathLike], relative_root: str | os.PathLike | None = None,
                     target_path: str | None = None, overwrite: bool = False,
                     show_progress: bool | None = None) -> list[dict]:
        """Files by their local paths; each keeps its path relative to `relative_root` (default: its own
        folder, so only its name)."""
        pairs = []
        for file in files:
            source = Path(file)
            if not source.is_file():
                raise InvalidError(f"{str(source)!r} is not a file")
            if relative_root is None:
                relative = source.name
            else:
                try:
                    relative = source.resolve().relative_to(Path(relative_root).resolve()).as_posix()
                except ValueError:
                    raise InvalidError(f"{str(source)!r} is not under relative_root {str(relative_root)!r}") from None
            pairs.append((relative, source))
        return self._upload(pairs, target_path, overwrite, show_progress)

    def _upload(self, pairs: list[tuple[str, Path]], target_path: str | None, overwrite: bool,
                show_progress: bool | None) -> list[dict]:
        sizes = {relative: source.stat().st_size for relative, source in pairs}
        sources = {relative: source for relative, source in pairs}
        target = (target_path or "").strip("/")
        sent: list[dict] = []
        with ProgressBar(sum(sizes.values()), self.name, enabled=wanted(show_progress)) as bar:
            for start in range(0, len(pairs), BATCH):  # signed just before use: the URLs expire
                batch = [{"path": relative, "size": sizes[relative]} for relative, _ in pairs[start:start + BATCH]]
                reply = self.workspace.client.post(self._path("uploads"), {"files": batch, "target_path": target,
                                                                           "overwrite": overwrite}, retry=True)
                for skipped in reply["skipped"]:
                    bar.update(sizes[_relative(skipped, target)])
                jobs = [(item, sources[_relative(item["path"], target)]) for item in reply["uploads"]]
                parallel(lambda job: self._send(job[0], job[1], bar.update), jobs)
                sent += [{"path": item["path"], "size": item["size"]} for item, _ in jobs]
        return sent

    def _send(self, item: dict, source: Path, progress: Callable[[int], None]) -> None:
        if "url" in item:
            with open_no_follow(source) as stream:
                self.workspace.client.upload(item["url"], stream, progress)
            return
        try:
            parts = self._send_parts(item, source, progress)
            self.workspace.client.post(self._path("uploads", "complete"),
                                       {"path": item["path"], "upload_id": item["upload_id"], "parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):  # the failure that stopped the upload is the one to raise
                self.workspace.client.post(self._path("uploads", "abort"),
                                           {"path": item["path"], "upload_id": item["upload_id"]})
            raise

    def _send_parts(self, item: dict, source: Path, progress: Callable[[int], None]) -> list[dict]:
        size, part_size, numbers = item["size"], item["part_size"], range(1, item["part_count"] + 1)
        parts: list[dict] = []
        for start in range(0, len(numbers), BATCH):
            wanted_parts = list(numbers[start:start + BATCH])
            urls = self.workspace.client.post(self._path("uploads", "parts"), {
                "path": item["path"], "upload_id": item["upload_id"], "part_numbers": wanted_parts})["parts"]

            def send(part: dict) -> dict:
                offset = (part["part_number"] - 1) * part_size
                etag = self.workspace.client.upload_part(part["url"], source, offset,
                                                         min(part_size, size - offset), progress)
                return {"part_number": part["part_number"], "etag": etag}

            parts += parallel(send, urls, "nimbus-parts")
        return parts

    # --- listing and downloads --------------------------------------------------------------------
    def list_files(self, prefix: str = "") -> list[dict]:
        """The datastore's files whose path starts with `prefix`: [{path, size, modified}], in path order."""
        params = {"prefix": prefix, "max_results": 1000} if prefix else {"max_results": 1000}
        return list(self.workspace.client.paged(self._path("files"), "files", params))

    def download(self, target_path: str | os.PathLike, prefix: str | None = None, overwrite: bool = False,
                 show_progress: bool | None = None) -> int:
        """The datastore's files under `prefix` into the local folder `target_path`, keeping their paths.
        Without `overwrite` a file that exists locally is kept. Returns how many files were written."""
        directory = Path(target_path)
        directory.mkdir(parents=True, exist_ok=True)
        files = [f for f in self.list_files(prefix or "")
                 if overwrite or not inside(directory, f["path"]).exists()]
        with ProgressBar(sum(f["size"] for f in files), self.name, enabled=wanted(show_progress)) as bar:
            for start in range(0, len(files), BATCH):
                paths = [f["path"] for f in files[start:start + BATCH]]
                links = self.workspace.client.post(self._path("downloads"), {"paths": paths}, retry=True)["downloads"]
                parallel(lambda link: self.workspace.client.download(link["url"], inside(directory, link["path"]),
                                                                     bar.update), links)
        return len(files)



def _relative(path: str, target: str) -> str:
    return path[len(target) + 1:] if target else path
