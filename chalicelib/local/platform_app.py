"""The local platform as a WSGI application: API requests into chalice's LocalGateway, presigned blob
URLs (`/blobs/…`, `/datastore-files/…`) to disk.

LocalGateway builds the event API Gateway would send, so the app runs unchanged. It is called on the
server's worker thread, one request at a time per thread, which is what keeps concurrent requests
apart (the app keeps its current request per thread: chalicelib/api/application.py).
"""
from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from chalice.config import Config
from chalice.local import LocalGateway, LocalGatewayException

from chalicelib.api.app import app
from chalicelib.errors import NotFound
from chalicelib.store.blob_server import is_blob_path, serve_blob

# A WSGI application may not set these (PEP 3333): the server frames the connection itself.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}
FILE_BLOCK = 1 << 20
log = logging.getLogger(__name__)


class PlatformApp:
    def __init__(self, stores: Callable[[], object]):
        self._stores = stores  # the services, hence the blob stores, are built after the server binds
        self._gateway = LocalGateway(app, Config.create())

    def __call__(self, environ: dict, start_response):
        method = environ["REQUEST_METHOD"]
        split = urlsplit(environ["REQUEST_URI"])  # still percent-encoded, as the routes and signatures expect
        length = environ.get("CONTENT_LENGTH")
        if is_blob_path(split.path):
            status, headers, body = serve_blob(self._stores(), method, split.path, dict(parse_qsl(split.query)),
                                               _headers(environ), environ["wsgi.input"],
                                               int(length) if length is not None else None)
            if hasattr(body, "read"):
                body = environ["wsgi.file_wrapper"](body, FILE_BLOCK)  # the server streams the file itself
            return _answer(start_response, method, status, headers, body)
        target = split.path + (f"?{split.query}" if split.query else "")
        payload = environ["wsgi.input"].read(int(length)) if length and length != "0" else None
        try:
            response = self._gateway.handle_request(method, target, _headers(environ), payload)
        except LocalGatewayException:  # chalice reports an unknown route as API Gateway would (403)
            missing = NotFound(f"no route {method} {split.path}")
            return _answer(start_response, method, missing.status, {"Content-Type": "application/json"},
                           [json.dumps(missing.to_dict()).encode()])
        answer = response.get("body") or b""
        headers = {**response.get("headers", {}),
                   **{k: ", ".join(v) for k, v in (response.get("multiValueHeaders") or {}).items()}}
        return _answer(start_response, method, response["statusCode"], headers,
                       [answer.encode() if isinstance(answer, str) else answer])


def _headers(environ: dict) -> dict[str, str]:
    """The request's headers, lower-cased as API Gateway passes them."""
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if key in environ:
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _answer(start_response, method: str, status: int, headers: dict, body):
    """`body` is a list of bytes (its length is counted here) or a file wrapper (its Content-Length is given)."""
    sized = isinstance(body, list)
    fields = [(name, str(value)) for name, value in headers.items()
              if name.lower() not in HOP_BY_HOP and not (sized and name.lower() == "content-length")]
    if sized:
        fields.append(("Content-Length", str(sum(map(len, body)))))
    start_response(f"{status} {_phrase(status)}", fields)
    if method == "HEAD":
        if hasattr(body, "close"):
            body.close()
        return []
    return body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
