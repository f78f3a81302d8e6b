"""The Blobs port on a local folder: one file per key, presigned URLs signed with a local HMAC key.

Every write goes to a temp file, is fsynced and then renamed over the target, so readers see either
the old bytes or the new ones and a crash never leaves a torn blob behind. A temp file is named after
the process writing it; one whose process is gone (killed mid-write) is removed when the platform starts.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO, Iterator
from urllib.parse import quote, urlencode

import psutil

from chalicelib.errors import Conflict, Forbidden, Invalid, NotFound
from chalicelib.store.blobs import BlobInfo, BlobPage, Blobs, check_key

CHUNK = 1024 * 1024
MAX_PAGE = 1000  # same ceiling as S3
# check_key rejects backslashes, so this folder can never be (or hide) a user's key.
TMP_DIR = ".tmp\\"
TMP_PREFIX = ".tmp-"  # then the writing process's pid
KEY_BYTES = 32


class LocalBlobs(Blobs):
    """`url_path` is where the blob endpoint serves this store. A store other than the platform's own
    (a local datastore's folder) is `confined`: a key whose path resolves out of the root through a
    symlink is refused, and its signatures name its root, so none is valid for another store."""

    def __init__(self, root: Path, public_url: str, signing_key_file: Path, url_path: str = "/blobs/",
                 confined: bool = False):
        self.root = Path(root)
        self.public_url = public_url.rstrip("/")
        self.signing_key_file = Path(signing_key_file)
        self.url_path = url_path
        self.confined = confined
        self._key: bytes | None = None

    # --- the port ---------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._write(key, lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        file, _ = self.open_for_read(key)
        with file:
            return file.read()

    def open_read(self, key: str) -> BinaryIO:
        return self.open_for_read(key)[0]

    def find(self, key: str) -> BlobInfo | None:
        try:
            stat = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return BlobInfo(key, stat.st_size, stat.st_mtime, _tag(stat)) if S_ISREG(stat.st_mode) else None

    def list(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> BlobPage:
        limit = max(1, min(limit, MAX_PAGE))
        blobs: list[BlobInfo] = []
        for blob in self._walk(self.root, "", prefix, start_after or ""):
            if len(blobs) == limit:  # one more exists, so the page is truncated
                return BlobPage(blobs, blobs[-1].key)
            blobs.append(blob)
        return BlobPage(blobs, None)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if not path.is_file():
            return  # deleting a missing blob succeeds, as on S3
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        # Drop the now-empty folders; rmdir refuses non-empty ones, so a concurrent write is safe.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def copy(self, source: str, target: str) -> None:
        check_key(target)
        file, _ = self.open_for_read(source)
        with file:
            self._write(target, lambda out: shutil.copyfileobj(file, out, CHUNK))

    def presign_put(self, key: str, expires_in: int) -> str:
        return self._presign("put", key, expires_in)

    def presign_get(self, key: str, expires_in: int) -> str:
        return self._presign("get", key, expires_in)

    # --- used by the blob HTTP endpoint -----------------------------------------------------------
    def resolve(self, path: str) -> "LocalBlobs":
        """This store, if the URL path is one of its own (a store is its own resolver: blob_server.py)."""
        if not path.startswith(self.url_path):
            raise NotFound("no such endpoint")
        return self

    def verify(self, op: str, key: str, expires: int | str, signature: str) -> None:
        """Raises Forbidden unless `signature` is ours for this op, key and expiry, and not expired."""
        try:
            expires = int(expires)
        except (TypeError, ValueError):
            raise Forbidden("malformed expiry") from None
        expected = self._sign(op, key, expires)
        if not hmac.compare_digest(expected.encode(), str(signature).encode()):
            raise Forbidden("signature mismatch")
        if expires < time.time():
            raise Forbidden("the URL has expired")

    def open_for_read(self, key: str) -> tuple[BinaryIO, int]:
        try:
            file = open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no blob {key!r}", field="key") from None
        return file, os.fstat(file.fileno()).st_size

    def write_stream(self, key: str, stream: BinaryIO, length: int) -> int:
        """Stores exactly `length` bytes read from `stream`, a chunk at a time."""
        if length < 0:
            raise Invalid("negative content length", field="Content-Length")

        def copy(out: BinaryIO) -> None:
            left = length
            while left:
                chunk = stream.read(min(left, CHUNK))
                if not chunk:
                    raise Invalid(f"body ended {left} bytes short of its length", field="Content-Length")
                out.write(chunk)
                left -= len(chunk)

        self._write(key, copy)
        return length

    def remove_abandoned_temporaries(self) -> int:
        """Deletes the temp files of writes whose process is gone (a kill mid-write); returns how many."""
        removed = 0
        try:
            entries = list(os.scandir(self.root / TMP_DIR))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and not _writer_alive(entry):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    # --- internals --------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key).split("/"))
        if self.confined:
            real_root = os.path.realpath(self.root)
            if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
                raise Forbidden(f"blob key {key!r} leads out of the store's folder", field="key")
        return path

    def _write(self, key: str, fill) -> None:
        target = self._path(key)
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            self._publish(key, Path(tmp), target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _publish(self, key: str, tmp: Path, target: Path) -> None:
        # A concurrent delete may prune the target's folder between mkdir and rename: try again.
        for attempt in range(3):
            try:
                self._make_dirs(target.parent)
                os.replace(tmp, target)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except (NotADirectoryError, IsADirectoryError, FileExistsError) as err:
                # A folder can't also be a file: "a" and "a/b" can't both exist here (S3 allows it).
                raise Conflict(f"blob key {key!r} clashes with an existing blob", field="key") from err
        _fsync_dir(target.parent)

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        while not folder.is_dir() and folder != self.root:
            missing.append(folder)
            folder = folder.parent
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise
            _fsync_dir(folder.parent)  # make the new folder's name durable too

    def _walk(self, folder: Path, base: str, prefix: str, start_after: str) -> Iterator[BlobInfo]:
        """Blobs under `folder` in key order; folders sort as "name/" so the order matches S3's."""
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        named = []
        for entry in entries:
            if "\\" in entry.name:  # temp files and anything else that can't be a key
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            named.append((base + entry.name + ("/" if is_dir else ""), is_dir, entry))
        for key, is_dir, entry in sorted(named, key=lambda n: n[0]):
            if is_dir:
                # Skip a folder when none of its keys can match the prefix or come after start_after.
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if key <= start_after and not start_after.startswith(key):
                    continue
                yield from self._walk(Path(entry.path), key, prefix, start_after)
            elif key.startswith(prefix) and key > start_after and entry.is_file(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                yield BlobInfo(key, stat.st_size, stat.st_mtime, _tag(stat))

    def _presign(self, op: str, key: str, expires_in: int) -> str:
        check_key(key)
        expires = int(time.time()) + int(expires_in)
        query = urlencode({"op": op, "expires": expires, "signature": self._sign(op, key, expires)})
        return f"{self.public_url}{self.url_path}{quote(key, safe='/')}?{query}"

    def _sign(self, op: str, key: str, expires: int) -> str:
        # A key never holds a backslash, so a confined store's messages can never be the platform's.
        scoped = f"{self.root}\\{key}" if self.confined else key
        message = f"{op}\n{scoped}\n{expires}".encode()
        return hmac.new(self._signing_key(), message, hashlib.sha256).hexdigest()

    def _signing_key(self) -> bytes:
        if self._key is None:
            self._key = _load_or_create_key(self.signing_key_file)
        return self._key


def _tag(stat: os.stat_result) -> str:
    return f"{stat.st_ino}-{stat.st_mtime_ns}"


def _load_or_create_key(path: Path) -> bytes:
    """Reads the key, creating it on first use. Every process that races here ends up with one key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Write the whole key to a private temp file, then link it into place: the link fails if
        # another process won, and a reader never sees a half-written key.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(KEY_BYTES))
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)
            _fsync_dir(path.parent)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise RuntimeError(f"{path} does not hold a {KEY_BYTES}-byte signing key; delete it to start over")
    return key


def _writer_alive(entry: os.DirEntry) -> bool:
    """Whether the process named in a temp file's name may still be writing it."""
    pid = entry.name[len(TMP_PREFIX):].split("-", 1)[0]
    if not entry.name.startswith(TMP_PREFIX) or not pid.isdigit():
        return False  # not one of ours: nothing writes it any more
    try:
        # A pid reused by a process started after the file was last written is not its writer.
        return psutil.Process(int(pid)).create_time() <= entry.stat(follow_symlinks=False).st_mtime + 1
    except psutil.Error:
        return False


def _fsync_dir(folder: Path) -> None:
    """Makes a rename or unlink in `folder` durable (a no-op where folders can't be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)
