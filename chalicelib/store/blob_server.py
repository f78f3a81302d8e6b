"""The local platform's endpoint behind LocalBlobs' presigned URLs, independent of any web framework.

`serve_blob` takes the raw (still percent-encoded) URL path and never raises: every failure becomes
a JSON error response, so the hosting server can pass its result straight through. `upload_refusal`
lets the server refuse an upload it may not take before it reads the body.
"""
from __future__ import annotations

import json
import logging
import posixpath
from typing import BinaryIO
from urllib.parse import quote, unquote

from chalicelib.errors import Forbidden, LengthRequired, MethodNotAllowed, NimbusError, NotFound
from chalicelib.store.blobs import check_key
from chalicelib.store.local_blobs import LocalBlobs

PREFIX = "/blobs/"
OPS = {"GET": "get", "PUT": "put"}
log = logging.getLogger(__name__)

Response = tuple[int, dict[str, str], "Iterable[bytes] | BinaryIO"]


def serve_blob(blobs: LocalBlobs, method: str, path: str, query: dict[str, str], headers: dict,
               body_stream: BinaryIO, content_length: int | None) -> Response:
    try:
        return _serve(blobs, method.upper(), path, query, body_stream, content_length)
    except NimbusError as err:
        return _json(err.status, err.to_dict())
    except Exception:  # the details go to the log, never to the caller
        log.exception("blob request failed: %s %s", method, path)
        internal = NimbusError("internal error")
        return _json(internal.status, internal.to_dict())


def upload_refusal(blobs: LocalBlobs, path: str, query: dict[str, str]) -> NimbusError | None:
    """Why a PUT to this URL would be refused, or None if it is a valid upload URL (checked again on serving)."""
    try:
        _authorize(blobs, "PUT", path, query)
    except NimbusError as err:
        return err
    return None


def _serve(blobs: LocalBlobs, method: str, path: str, query: dict[str, str], body_stream: BinaryIO,
           content_length: int | None) -> Response:
    key = _authorize(blobs, method, path, query)
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


def _authorize(blobs: LocalBlobs, method: str, path: str, query: dict[str, str]) -> str:
    """The key this presigned URL grants `method` on; raises unless the URL is valid for it."""
    if not path.startswith(PREFIX):
        raise NotFound("no such endpoint")
    if method not in OPS:
        raise MethodNotAllowed(f"{method} is not supported")
    key = check_key(unquote(path[len(PREFIX):]))
    # A URL signed for downloads must not accept uploads, and vice versa.
    if query.get("op") != OPS[method]:
        raise Forbidden(f"this URL does not allow {method}")
    blobs.verify(OPS[method], key, query.get("expires", ""), query.get("signature", ""))
    return key


def _attachment(name: str) -> str:
    # Headers must be latin-1: an ASCII fallback, plus the exact name in RFC 6266's UTF-8 form.
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _json(status: int, body: dict) -> Response:
    data = json.dumps(body).encode()
    return status, {"Content-Type": "application/json", "Content-Length": str(len(data))}, [data]
