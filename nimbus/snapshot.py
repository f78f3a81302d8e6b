"""Snapshots: the files of a source folder, stored by content so unchanged files are sent only once.

collect() walks and hashes a folder, upload() sends what the store lacks and registers the manifest,
extract() and safe_extract_zip() write files back out without letting any path escape the target.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import pathspec

from nimbus.client import CHUNK, ApiClient, api_path
from nimbus.exceptions import InvalidError
from nimbus.progress import human_size
from nimbus.transfers import parallel

DEFAULT_MAX_FILES = 2000
DEFAULT_MAX_BYTES = 300 * 1024 * 1024
IGNORE_FILES = (".amlignore", ".gitignore")  # in each folder, the first one present is the only one read
ALWAYS_SKIPPED = ".git"
DIGEST_BATCH = 1000  # digests asked about per request
SHOWN_OFFENDERS = 5

Progress = Callable[[int], None]


class SnapshotError(InvalidError):
    """The folder cannot be snapshotted as it is, or a snapshot cannot be written out safely."""


@dataclass(frozen=True)
class SnapshotFile:
    path: str  # relative POSIX path inside the snapshot
    abs_path: str
    size: int
    digest: str  # sha256, hex
    executable: bool


# --- collecting --------------------------------------------------------------------------------------
def limits_from_env(environ: Mapping[str, str] | None = None) -> dict:
    """collect()'s limits as the service reads them, so the client refuses what the service would."""
    environ = os.environ if environ is None else environ
    return {"max_files": int(environ.get("NIMBUS_SNAPSHOT_MAX_FILES", DEFAULT_MAX_FILES)),
            "max_bytes": int(environ.get("NIMBUS_SNAPSHOT_MAX_BYTES", DEFAULT_MAX_BYTES))}


def collect(source_dir: str | os.PathLike, max_files: int = DEFAULT_MAX_FILES,
            max_bytes: int = DEFAULT_MAX_BYTES) -> list[SnapshotFile]:
    """Every file of the folder that its ignore files keep, in path order, with sha256 digests.

    Limits are checked on sizes alone, before any content is read.
    """
    root = Path(source_dir)
    if not root.is_dir():
        raise SnapshotError(f"{str(root)!r} is not a folder", field="source_directory")
    root_real = Path(os.path.realpath(root))
    found = sorted(_walk(root, "", [], {root_real}, root_real))
    _check_limits(root, found, max_files, max_bytes)
    files = []
    for rel, abs_path, executable in ((f[0], f[1], f[3]) for f in found):
        digest, size = file_digest(abs_path)  # size as read: the file may have changed since the walk
        files.append(SnapshotFile(rel, abs_path, size, digest, executable))
    return files


def file_digest(path: str | os.PathLike) -> tuple[str, int]:
    """(sha256 hex, size), reading 1 MiB at a time."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


Rules = list[tuple[str, pathspec.GitIgnoreSpec]]  # (folder relative to the root, its ignore patterns)


def _walk(folder: Path, rel: str, rules: Rules, chain: set[Path], root_real: Path
          ) -> Iterator[tuple[str, str, int, bool]]:
    """(relative path, absolute path, size, executable) of each kept file under `folder`."""
    spec = _ignore_spec(folder)
    if spec is not None:
        rules = [*rules, (rel, spec)]
    with os.scandir(folder) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.name == ALWAYS_SKIPPED:
            continue
        path = f"{rel}/{entry.name}" if rel else entry.name
        try:
            info = entry.stat()  # follows links
        except FileNotFoundError:
            if _ignored(path, False, rules):
                continue
            raise SnapshotError(f"{path!r} is a link to nothing; remove it or add it to an ignore file",
                                field="source_directory") from None
        is_dir = stat.S_ISDIR(info.st_mode)
        if _ignored(path, is_dir, rules):
            continue
        real = Path(os.path.realpath(entry.path))
        if entry.is_symlink() and not real.is_relative_to(root_real):
            raise SnapshotError(f"{path!r} links to {str(real)!r}, outside the source folder; copy the file in "
                                f"or add the link to an ignore file", field="source_directory")
        _check_name(path)
        if is_dir:
            if real not in chain:  # a link back to a folder being walked would repeat forever
                yield from _walk(Path(entry.path), path, rules, chain | {real}, root_real)
        elif stat.S_ISREG(info.st_mode):  # sockets and pipes have no content to keep
            yield path, os.path.abspath(entry.path), info.st_size, bool(info.st_mode & 0o111)


def _ignore_spec(folder: Path) -> pathspec.GitIgnoreSpec | None:
    for name in IGNORE_FILES:
        candidate = folder / name
        if candidate.is_file():
            lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines()
            return pathspec.GitIgnoreSpec.from_lines(lines)
    return None


def _ignored(path: str, is_dir: bool, rules: Rules) -> bool:
    """Git's rule: the deepest ignore file with a matching pattern decides, its last match wins."""
    for base, spec in reversed(rules):
        inner = path[len(base) + 1:] if base else path
        verdict = spec.check_file(inner + "/" if is_dir else inner).include
        if verdict is not None:
            return verdict
    return False


def _check_name(path: str) -> None:
    # The service takes UTF-8 POSIX paths only; a backslash would be a separator on Windows.
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise SnapshotError(f"{path.encode('utf-8', 'surrogateescape')!r} is not a UTF-8 file name; rename it "
                            f"or add it to an ignore file", field="source_directory") from None
    if "\\" in path:
        raise SnapshotError(f"{path!r} has a backslash in its name; rename it or add it to an ignore file",
                            field="source_directory")


def _check_limits(root: Path, found: Sequence[tuple[str, str, int, bool]], max_files: int, max_bytes: int) -> None:
    total = sum(f[2] for f in found)
    by_folder_bytes: dict[str, int] = defaultdict(int)
    by_folder_count: dict[str, int] = defaultdict(int)
    for rel, _, size, _ in found:
        top = rel.split("/", 1)[0] + "/" if "/" in rel else "./"
        by_folder_count[top] += 1
        if top != "./":  # the root's total is the whole snapshot: no help in finding the culprit
            by_folder_bytes[top] += size
    hint = "; leave them out with .amlignore (or .gitignore)"
    if len(found) > max_files:
        most = _top(by_folder_count, lambda n: f"{n} files")
        raise SnapshotError(f"{str(root)!r} has {len(found)} files, over the limit of {max_files} "
                            f"(NIMBUS_SNAPSHOT_MAX_FILES); most files: {most}{hint}",
                            field="source_directory")
    if total > max_bytes:
        biggest = _top({f[0]: f[2] for f in found}, human_size)
        folders = _top(by_folder_bytes, human_size)
        raise SnapshotError(f"{str(root)!r} holds {human_size(total)}, over the limit of {human_size(max_bytes)} "
                            f"(NIMBUS_SNAPSHOT_MAX_BYTES); biggest files: {biggest}"
                            + (f"; biggest folders: {folders}" if folders else "") + hint,
                            field="source_directory")


def _top(amounts: Mapping[str, int], describe: Callable[[int], str]) -> str:
    ranked = sorted(amounts.items(), key=lambda item: (-item[1], item[0]))[:SHOWN_OFFENDERS]
    return ", ".join(f"{name} ({describe(amount)})" for name, amount in ranked)


# --- uploading ---------------------------------------------------------------------------------------
def upload(workspace_client: ApiClient, workspace_name: str, files: Sequence[SnapshotFile],
           progress: Progress | None = None) -> dict:
    """Sends the contents the store lacks, then registers the manifest.

    Returns {"id", "file_count", "total_bytes", "uploaded_bytes"}; uploaded_bytes counts only what was sent.
    `progress` hears of bytes sent and of bytes the store already had, so a bar over all files completes.
    """
    by_digest = {f.digest: f for f in files}  # identical contents are sent once
    unique = list(by_digest.values())
    uploads_path = api_path("workspaces", workspace_name, "snapshots", "uploads")
    sent = 0
    for start in range(0, len(unique), DIGEST_BATCH):  # URLs asked for just before use: they expire
        batch = unique[start:start + DIGEST_BATCH]
        reply = workspace_client.post(uploads_path, {"files": [{"digest": f.digest, "size": f.size} for f in batch]},
                                      retry=True)
        jobs = [(item["url"], by_digest[item["digest"]]) for item in reply.get("uploads") or []]
        if progress:
            missing = {item["digest"] for item in reply.get("uploads") or []}
            progress(sum(f.size for f in batch if f.digest not in missing))
        sent += sum(parallel(lambda job: workspace_client.upload(job[0], job[1].abs_path, progress), jobs,
                             "nimbus-snapshot"))
    manifest = [{"path": f.path, "digest": f.digest, "size": f.size, "executable": f.executable}
                for f in sorted(files, key=lambda f: f.path)]
    created = workspace_client.post(api_path("workspaces", workspace_name, "snapshots"), {"files": manifest},
                                    retry=True)
    return {"id": created["id"], "file_count": created.get("file_count", len(files)),
            "total_bytes": created.get("total_bytes", sum(f.size for f in files)), "uploaded_bytes": sent}




# --- writing out -------------------------------------------------------------------------------------
_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_target(target_dir: str | os.PathLike, relative: str) -> Path:
    """target_dir/relative, refusing absolute paths, `..`, backslashes and anything resolving outside."""
    parts = PurePosixPath(relative).parts if relative else ()
    if (not parts or relative.startswith("/") or "\\" in relative or _DRIVE.match(relative)
            or any(part in ("", ".", "..") for part in relative.split("/"))):
        raise SnapshotError(f"refusing path {relative!r}: it must be relative and stay inside the target folder")
    root = Path(target_dir).resolve()
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root):  # e.g. through a link already in the folder
        raise SnapshotError(f"refusing path {relative!r}: it would be written outside {str(root)!r}")
    return target


def extract(files_with_urls: Iterable[Mapping], target_dir: str | os.PathLike, client: ApiClient,
            progress: Progress | None = None) -> list[str]:
    """Downloads each {path, url, digest?, executable?} into target_dir; returns the paths written.

    Every path is checked before anything is written, and each content against its digest.
    """
    files = list(files_with_urls)
    targets = [safe_target(target_dir, item["path"]) for item in files]

    def fetch(job: tuple[Mapping, Path]) -> None:
        item, target = job
        client.download(item["url"], target, progress)
        if item.get("digest") and file_digest(target)[0] != item["digest"]:
            target.unlink(missing_ok=True)
            raise SnapshotError(f"{item['path']!r} does not match its digest: the download was corrupted")
        if item.get("executable"):
            _make_executable(target)

    # Snapshots are mostly small files: overlapping their round trips is what makes fetching fast.
    parallel(fetch, zip(files, targets), "nimbus-snapshot")  # raises the first failure
    return [str(target) for target in targets]


def safe_extract_zip(zip_path: str | os.PathLike, target_dir: str | os.PathLike) -> list[str]:
    """Extracts a zip archive, refusing it whole if any entry would land outside target_dir."""
    written = []
    with zipfile.ZipFile(zip_path) as archive:
        entries = archive.infolist()
        targets = [safe_target(target_dir, entry.filename.rstrip("/") if entry.is_dir() else entry.filename)
                   for entry in entries]
        for entry, target in zip(entries, targets):
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(entry) as source, open(target, "wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
            if (entry.external_attr >> 16) & 0o111:
                _make_executable(target)
            written.append(str(target))
    return written


def _make_executable(path: Path) -> None:
    mode = path.stat().st_mode
    path.chmod(mode | (mode & 0o444) >> 2)  # execute wherever it may be read
