"""The Blobs port: an object store with presigned upload/download URLs (S3, or a local folder)."""
from __future__ import annotations

import abc
import io
import posixpath
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from chalicelib.errors import Invalid

MAX_SINGLE_UPLOAD = 5 * 1024 ** 3  # one PUT, as S3 allows

@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch
    # What the store says identifies this content without reading it: S3's ETag, a local file's inode and
    # mtime in nanoseconds (a rewrite through rename gets a new inode). Fingerprints are built from it.
    tag: str | None = None


@dataclass
class BlobPage:
    blobs: list[BlobInfo]
    next: str | None  # pass as `start_after` to continue


def check_key(key: str) -> str:
    """Blob keys are relative POSIX paths without `..`, empty or absolute parts."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise Invalid(f"invalid blob key {key!r}", field="key")
    if any(part in ("", ".", "..") for part in key.split("/")) or posixpath.normpath(key) != key:
        raise Invalid(f"invalid blob key {key!r}", field="key")
    return key


class Blobs(abc.ABC):
    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raises NotFound."""

    def open_read(self, key: str) -> BinaryIO:
        """The blob as a stream to read (and close); raises NotFound. Stores that can stream override it."""
        return io.BytesIO(self.get_bytes(key))

    @abc.abstractmethod
    def find(self, key: str) -> BlobInfo | None: ...

    @abc.abstractmethod
    def list(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> BlobPage:
        """Blobs whose key starts with `prefix`, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def copy(self, source: str, target: str) -> None:
        """Server-side copy; raises NotFound when the source is missing."""

    @abc.abstractmethod
    def presign_put(self, key: str, expires_in: int) -> str:
        """A URL that accepts one HTTP PUT of the object's bytes."""

    @abc.abstractmethod
    def presign_get(self, key: str, expires_in: int) -> str: ...

    # --- multipart uploads, on the stores that have them (S3) -----------------------------------
    multipart = False  # otherwise a file goes in one PUT, up to MAX_SINGLE_UPLOAD

    def start_multipart(self, key: str) -> str:
        """An upload id for a file sent in parts."""
        raise Invalid("this store takes each file in one upload", field="size")

    def presign_part(self, key: str, upload_id: str, number: int, expires_in: int) -> str:
        """A URL that accepts one HTTP PUT of part `number` (from 1); its answer's ETag names the part."""
        raise Invalid("this store takes each file in one upload", field="size")

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """Joins the parts, given as (number, ETag) in order; the file appears only then."""
        raise Invalid("this store takes each file in one upload", field="upload_id")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        raise Invalid("this store takes each file in one upload", field="upload_id")

    # --- conveniences written once --------------------------------------------------------------
    def list_all(self, prefix: str) -> Iterator[BlobInfo]:
        start = None
        while True:
            page = self.list(prefix, start_after=start)
            yield from page.blobs
            if page.next is None:
                return
            start = page.next

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        for blob in list(self.list_all(prefix)):
            self.delete(blob.key)
            count += 1
        return count
