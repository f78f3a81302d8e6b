"""The local platform's endpoint behind LocalBlobs' presigned URLs, independent of any web framework.

`serve_blob` takes the raw (still percent-encoded) URL path and never raises: every failure becomes
a JSON error response, so the hosting server can pass its result straight through. `upload_refusal`
lets the server refuse an upload it may not take before it reads the body.

Two kinds of store sit behind it: the platform's own under `/blobs/`, and each local datastore root
(NIMBUS_DATASTORE_ROOTS) under `/datastore-files/<root id>/`. A single LocalBlobs serves as a resolver
of its own paths, so either it or a BlobStores is what the endpoint is given.
"""
from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote

from chalicelib.errors import Forbidden, LengthRequired, MethodNotAllowed, NimbusError, NotFound
from chalicelib.store.blobs import Blobs, check_key
from chalicelib.store.local_blobs import LocalBlobs

PREFIX = "/blobs/"
ROOTS_PREFIX = "/datastore-files/"
OPS = {"GET": "get", "PUT": "put"}
log = logging.getLogger(__name__)

Response = tuple[int, dict[str, str], "Iterable[bytes] | BinaryIO"]


class BlobStores:
    """The platform's store and the datastore roots' stores, by the URL path that reaches each."""

    def __init__(self, platform: Blobs, roots: tuple[str, ...], public_url: str, signing_key_file: Path):
        self.platform = platform
        self.roots = {root_id(root): root_blobs(root, public_url, signing_key_file) for root in roots}

    def resolve(self, path: str) -> LocalBlobs:
        if path.startswith(ROOTS_PREFIX):
            store = self.roots.get(path[len(ROOTS_PREFIX):].split("/", 1)[0])
            if store is None:
                raise NotFound("no such datastore root")
            return store
        if not isinstance(self.platform, LocalBlobs):  # the platform's blobs are on S3: no URL of theirs is here
            raise NotFound("no such endpoint")
        return self.platform.resolve(path)


def is_blob_path(path: str) -> bool:
    return path.startswith(PREFIX) or path.startswith(ROOTS_PREFIX)


def root_id(root: str) -> str:
    """A root's name in URLs: stable across restarts, and revealing nothing of its path."""
    return hashlib.sha256(root.encode()).hexdigest()[:16]


def root_blobs(root: str, public_url: str, signing_key_file: Path) -> LocalBlobs:
    """The store over a local datastore root, served under its own path."""
    return LocalBlobs(Path(root), public_url, signing_key_file, url_path=f"{ROOTS_PREFIX}{root_id(root)}/",
                      confined=True)


def serve_blob(blobs: "LocalBlobs | BlobStores", method: str, path: str, query: dict[str, str], headers: dict,
               body_stream: BinaryIO, content_length: int | None) -> Response:
    try:
        return _serve(blobs, method.upper(), path, query, body_stream, content_length)
    except NimbusError as err:
        return _json(err.status, err.to_dict())
    except Exception:  # the details go to the log, never to the caller
        log.exception("blob request failed: %s %s", method, path)
        internal = NimbusError("internal error")
        return _json(internal.status, internal.to_dict())


def upload_refusal(blobs: "LocalBlobs | BlobStores", path: str, query: dict[str, str]) -> NimbusError | None:
    """Why a PUT to this URL would be refused, or None if it is a valid upload URL (checked again on serving)."""
    try:
        _authorize(blobs, "PUT", path, query)
    except NimbusError as err:
        return err
    return None


def _serve(blobs: "LocalBlobs | BlobStores", method: str, path: str, query: dict[str, str], body_stream: BinaryIO,
           content_length: int | None) -> Response:
    blobs, key = _authorize(blobs, method, path, query)
    if method == "PUT":
        if content_length is None:
            raise LengthRequired("Content-Length is required")
        blobs.write_stream(key, body_stream, content_length)
        return 200, {"Content-Length": "0"}, [b""]

    file, size = blobs.open_for_read(key)
    return 200, {
        "Content-Length": str(size),
        "Content-Type": "application/octet-stream",
        "Content-Disposition": _attachment(posixpath.basename(key)),
    }, file


def _authorize(stores: "LocalBlobs | BlobStores", method: str, path: str,
               query: dict[str, str]) -> tuple[LocalBlobs, str]:
    """The store and key this presigned URL grants `method` on; raises unless the URL is valid for it."""
    blobs = stores.resolve(path)
    if method not in OPS:
        raise MethodNotAllowed(f"{method} is not supported")
    key = check_key(unquote(path[len(blobs.url_path):]))
    # A URL signed for downloads must not accept uploads, and vice versa.
    if query.get("op") != OPS[method]:
        raise Forbidden(f"this URL does not allow {method}")
    blobs.verify(OPS[method], key, query.get("expires", ""), query.get("signature", ""))
    return blobs, key


def _attachment(name: str) -> str:
    # Headers must be latin-1: an ASCII fallback, plus the exact name in RFC 6266's UTF-8 form.
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _json(status: int, body: dict) -> Response:
    data = json.dumps(body).encode()
    return status, {"Content-Type": "application/json", "Content-Length": str(len(data))}, [data]
