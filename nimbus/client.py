"""A thin HTTP client for the Nimbus API and for presigned transfer URLs.

API calls send and receive JSON; error responses become the typed errors of nimbus.exceptions.
Only requests that are safe to repeat are retried, and only when the service is unavailable.
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import secrets
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3

from nimbus.version import __version__
from nimbus.exceptions import NimbusError, ServiceUnavailableError, error_for_status
from nimbus.metric_values import strict_json

DEFAULT_TIMEOUT = (10.0, 120.0)  # seconds to connect, seconds between bytes
DEFAULT_ATTEMPTS = 5
CHUNK = 1024 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

Progress = Callable[[int], None]  # called with the number of bytes just moved
T = TypeVar("T")


def api_path(*segments: str) -> str:
    """'/v1/a/b' from segments, each percent-encoded so a name can never add a path level."""
    return "/v1/" + "/".join(quote(str(s), safe="") for s in segments)


class ApiClient:
    def __init__(self, url: str, token: str, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 attempts: int = DEFAULT_ATTEMPTS):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self._auth = {"Authorization": f"Bearer {token}", "User-Agent": f"nimbus-sdk/{__version__}"}
        # API calls go straight through urllib3: requests costs ~1 ms a call more (it re-reads proxy
        # settings every time), which is most of a short call's time. Proxies are read here, once.
        self._pool = _api_pool(self.url)
        # Presigned URLs carry their own signature: they must never see our token.
        self._transfers = _new_session()

    # --- API --------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                data: bytes | None = None, retry: bool | None = None, token: str | None = None) -> Any:
        """The decoded JSON reply. `retry` defaults to True for idempotent methods only.

        `token` replaces the client's own bearer token for this call (an endpoint key, for scoring).
        """
        method = method.upper()
        headers = dict(self._auth)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if json is not None:
            data = strict_json(json)
        if data is not None:
            headers["Content-Type"] = "application/json"

        url = self.url + path + ("?" + urlencode(params, doseq=True) if params else "")

        def attempt() -> Any:
            return _decoded(*self._exchange(method, url, data, headers))

        return self.with_retries(attempt, method in IDEMPOTENT if retry is None else retry)

    def get(self, path: str, /, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, *, retry: bool = False) -> Any:
        return self.request("POST", path, json=body if body is not None else {}, retry=retry)

    def paged(self, path: str, key: str, params: dict | None = None) -> Iterator[dict]:
        """Every item of a listing, following next_page_token."""
        params = dict(params or {})
        while True:
            page = self.request("GET", path, params=params)
            yield from page.get(key) or []
            if not page.get("next_page_token"):
                return
            params["page_token"] = page["next_page_token"]

    # --- presigned transfers ------------------------------------------------------------------------
    def upload(self, url: str, source: str | os.PathLike | BinaryIO, progress: Progress | None = None) -> int:
        """PUTs a file (streamed from disk) or a binary stream to a presigned URL; returns its size."""
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as stream:
                return self._upload_stream(url, stream, progress)
        return self._upload_stream(url, source, progress)

    def download(self, url: str, destination: str | os.PathLike, progress: Progress | None = None) -> int:
        """GETs a presigned URL into a file, streaming; the file appears only once complete."""
        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> int:
            with self.open_download(url) as response:
                # A plain open (not mkstemp) so the file gets the usual permissions from the umask.
                partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
                try:
                    with open(partial, "xb") as out:
                        size = copy_chunks(response.iter_content(CHUNK), out, progress)
                    os.replace(partial, target)
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
                return size

        return self.with_retries(attempt, True)

    def download_zip(self, entries, destination: str | os.PathLike, progress: Progress | None = None) -> str:
        """Streams presigned GETs into one zip file, which appears only once complete. `entries`:
        (name or ZipInfo, size, the URL or a function giving it)."""
        target = Path(destination)
        partial = target.with_name(target.name + ".partial")
        try:
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, size, url in entries:
                    link = url() if callable(url) else url
                    with self.with_retries(lambda: self.open_download(link), True) as response, \
                            archive.open(name, "w", force_zip64=size > 2**31) as out:
                        copy_chunks(response.iter_content(CHUNK), out, progress)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return str(target)

    def open_download(self, url: str) -> requests.Response:
        """A streaming response for a presigned GET (use it as a context manager)."""
        response = self._send(self._transfers, "GET", url, stream=True)
        if response.status_code >= 400:
            with response:
                raise _error(response.status_code, response.content, response.reason)
        return response

    def close(self) -> None:
        self._pool.clear()
        self._transfers.close()

    # --- internals ----------------------------------------------------------------------------------
    def _exchange(self, method: str, url: str, body: bytes | None, headers: dict) -> tuple[int, bytes, str]:
        """One API call: (status, body, reason); a connection failure is ServiceUnavailableError."""
        try:
            response = self._pool.request(method, url, body=body, headers=headers, retries=False,
                                          timeout=urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1]))
        except urllib3.exceptions.HTTPError as err:
            raise ServiceUnavailableError(f"cannot reach {_origin(url)}: {_reason(err)}") from None
        return response.status, response.data, response.reason

    def with_retries(self, attempt: Callable[[], T], retry: bool) -> T:
        for number in range(self.attempts):
            try:
                return attempt()
            except ServiceUnavailableError:
                if not retry or number == self.attempts - 1:
                    raise
                time.sleep(backoff(number))
        raise AssertionError("unreachable")

    def upload_part(self, url: str, source: str | os.PathLike, offset: int, length: int,
                    progress: Progress | None = None) -> str:
        """PUTs `length` bytes of a file from `offset` to a presigned URL of one part; returns its ETag."""
        with open(source, "rb") as stream:
            response = self._put(url, stream, offset, length, progress)
        etag = response.headers.get("ETag")
        if not etag:
            raise ServiceUnavailableError(f"{_origin(url)} answered a part without its ETag")
        return etag

    def _upload_stream(self, url: str, stream: BinaryIO, progress: Progress | None) -> int:
        if not _seekable(stream):
            stream = io.BytesIO(stream.read())  # a pipe can be sent once only: keep it for retries
        start = stream.tell()
        size = _remaining(stream, start)
        self._put(url, stream, start, size, progress)
        return size

    def _put(self, url: str, stream: BinaryIO, start: int, size: int, progress: Progress | None) -> requests.Response:
        def attempt() -> requests.Response:
            stream.seek(start)
            body = _ProgressReader(stream, size, progress) if size else b""
            headers = {"Content-Type": "application/octet-stream"}
            response = self._send(self._transfers, "PUT", url, data=body, headers=headers)
            if response.status_code >= 400:
                raise _error(response.status_code, response.content, response.reason)
            return response

        return self.with_retries(attempt, True)

    def _send(self, session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise ServiceUnavailableError(f"cannot reach {_origin(url)}: {_reason(err)}") from None


class _ProgressReader:
    """A file wrapper that requests streams in chunks, reporting each chunk it hands over; it ends after
    `size` bytes, so a part of a file is sent as its own body."""

    def __init__(self, stream: BinaryIO, size: int, progress: Progress | None):
        self._stream, self._size, self._progress = stream, size, progress
        self._left = size

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int = -1) -> bytes:
        chunk = self._stream.read(self._left if amount is None or amount < 0 else min(amount, self._left))
        self._left -= len(chunk)
        if chunk and self._progress:
            self._progress(len(chunk))
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk


def copy_chunks(chunks: Iterator[bytes], out: BinaryIO, progress: Progress | None = None) -> int:
    total = 0
    for chunk in chunks:
        out.write(chunk)
        total += len(chunk)
        if progress:
            progress(len(chunk))
    return total


def backoff(attempt: int, base: float = 0.25, cap: float = 8.0) -> float:
    """Exponential back-off with jitter, so clients that failed together do not retry together."""
    return min(cap, base * 2**attempt) * (0.5 + random.random() / 2)


def _new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = f"nimbus-sdk/{__version__}"
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _decoded(status: int, content: bytes, reason: str | None) -> Any:
    if status >= 400:
        raise _error(status, content, reason)
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        raise NimbusError(f"the service sent a reply that is not JSON (HTTP {status})", status=status) from None


def _error(status: int, content: bytes, reason: str | None) -> NimbusError:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    text = " ".join(content.decode("utf-8", "replace").split())[:200] if body is None else ""
    fallback = f"HTTP {status} {reason or ''}".strip() + (f": {text}" if text else "")
    return error_for_status(status, body, fallback)


def _api_pool(url: str) -> urllib3.PoolManager:
    proxy = requests.utils.get_environ_proxies(url).get(urlsplit(url).scheme)
    if proxy:
        return urllib3.ProxyManager(proxy, maxsize=16)
    return urllib3.PoolManager(maxsize=16)


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError):
        return False


def _remaining(stream: BinaryIO, start: int) -> int:
    end = stream.seek(0, os.SEEK_END)
    stream.seek(start)
    return max(0, end - start)


def _origin(url: str) -> str:
    return url.split("?", 1)[0]


def _reason(err: Exception) -> str:
    if isinstance(err, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out"
    # urllib3 buries the operating system's reason deep inside its message.
    match = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", str(err))
    return match[1].strip() if match else "connection failed"
