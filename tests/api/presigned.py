"""Moving bytes through presigned URLs in tests, on either backend."""
from __future__ import annotations

import io
from urllib.parse import parse_qsl, urlsplit

import requests

from chalicelib.store.blob_server import serve_blob


def transfer(backend: str, services, method: str, url: str, data: bytes = b"") -> tuple[int, bytes]:
    """One HTTP request to a presigned URL: S3 (moto) through requests, the local platform through serve_blob."""
    if backend == "aws":
        response = requests.request(method, url, data=data if method == "PUT" else None, timeout=10)
        return response.status_code, response.content
    parts = urlsplit(url)
    status, _, body = serve_blob(services.ctx.blobs, method, parts.path, dict(parse_qsl(parts.query)), {},
                                 io.BytesIO(data), len(data) if method == "PUT" else None)
    if hasattr(body, "read"):
        with body:
            return status, body.read()
    return status, b"".join(body)
