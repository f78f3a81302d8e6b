"""Helpers of the API tests: bytes through presigned URLs on either backend, threads released at once."""
from __future__ import annotations

import io
import threading
from urllib.parse import parse_qsl, urlsplit

import requests

from chalicelib.store.blob_server import BlobStores, serve_blob


def transfer(backend: str, services, method: str, url: str, data: bytes = b"") -> tuple[int, bytes]:
    """One HTTP request to a presigned URL: (status, body)."""
    return exchange(backend, services, method, url, data)[:2]


def exchange(backend: str, services, method: str, url: str, data: bytes = b"") -> tuple[int, bytes, dict]:
    """One HTTP request to a presigned URL: (status, body, headers). An S3's (moto's) through requests; the
    local platform's (its own blobs and its datastore roots) straight into serve_blob."""
    settings = services.ctx.settings
    if backend == "aws" or not url.startswith(settings.public_url + "/"):
        response = requests.request(method, url, data=data if method == "PUT" else None, timeout=10)
        return response.status_code, response.content, dict(response.headers)
    parts = urlsplit(url)
    stores = BlobStores(services.ctx.blobs, settings.datastore_roots, settings.public_url, settings.home / "signing.key")
    status, headers, body = serve_blob(stores, method, parts.path, dict(parse_qsl(parts.query)), {},
                                       io.BytesIO(data), len(data) if method == "PUT" else None)
    if hasattr(body, "read"):
        with body:
            return status, body.read(), headers
    return status, b"".join(body), headers


def all_at_once(work, count: int) -> list[BaseException]:
    """Runs work(0) … work(count - 1) in threads released together; returns what they raised."""
    barrier, errors = threading.Barrier(count), []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            work(n)
        except BaseException as err:  # noqa: BLE001 - returned to the test
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def every_page(fetch) -> list[dict]:
    """Calls fetch(page_token) from None on, following next_page_token; returns every page."""
    pages, token = [], None
    while True:
        pages.append(fetch(token))
        token = pages[-1]["next_page_token"]
        if not token:
            return pages
        assert len(pages) < 1000, "paging does not end"


def token_param(token: str | None, separator: str = "&") -> str:
    return f"{separator}page_token={token}" if token else ""
