"""A thin HTTP client for the Nimbus API and for presigned transfer URLs.

API calls send and receive JSON; error responses become the typed errors of nimbus.exceptions.
Only requests that are safe to repeat are retried, and only when the service is unavailable.
"""
from __future__ import annotations

import io
import os
import random
import re
import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, TypeVar
from urllib.parse import quote

import requests

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
        self._auth = {"Authorization": f"Bearer {token}"}
        self._session = _new_session()
        # Presigned URLs carry their own signature: they must never see our token.
        self._transfers = _new_session()

    # --- API --------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                data: bytes | None = None, retry: bool | None = None) -> Any:
        """The decoded JSON reply. `retry` defaults to True for idempotent methods only."""
        method = method.upper()
        headers = dict(self._auth)
        if json is not None:
            data = strict_json(json)
        if data is not None:
            headers["Content-Type"] = "application/json"

        def attempt() -> Any:
            response = self._send(self._session, method, self.url + path, params=params, data=data, headers=headers)
            return _decoded(response)

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

    def open_download(self, url: str) -> requests.Response:
        """A streaming response for a presigned GET (use it as a context manager)."""
        response = self._send(self._transfers, "GET", url, stream=True)
        if response.status_code >= 400:
            with response:
                raise _error(response)
        return response

    def close(self) -> None:
        self._session.close()
        self._transfers.close()

    # --- internals ----------------------------------------------------------------------------------
    def with_retries(self, attempt: Callable[[], T], retry: bool) -> T:
        for number in range(self.attempts):
            try:
                return attempt()
            except ServiceUnavailableError:
                if not retry or number == self.attempts - 1:
                    raise
                time.sleep(backoff(number))
        raise AssertionError("unreachable")

    def _upload_stream(self, url: str, stream: BinaryIO, progress: Progress | None) -> int:
        if not _seekable(stream):
            stream = io.BytesIO(stream.read())  # a pipe can be sent once only: keep it for retries
        start = stream.tell()
        size = _remaining(stream, start)

        def attempt() -> int:
            stream.seek(start)
            body = _ProgressReader(stream, size, progress) if size else b""
            headers = {"Content-Type": "application/octet-stream"}
            response = self._send(self._transfers, "PUT", url, data=body, headers=headers)
            if response.status_code >= 400:
                raise _error(response)
            return size

        return self.with_retries(attempt, True)

    def _send(self, session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise ServiceUnavailableError(f"cannot reach {_origin(url)}: {_reason(err)}") from None


class _ProgressReader:
    """A file wrapper that requests streams in chunks, reporting each chunk it hands over."""

    def __init__(self, stream: BinaryIO, size: int, progress: Progress | None):
        self._stream, self._size, self._progress = stream, size, progress

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int = -1) -> bytes:
        chunk = self._stream.read(amount)
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


def _decoded(response: requests.Response) -> Any:
    if response.status_code >= 400:
        raise _error(response)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise NimbusError(f"the service sent a reply that is not JSON (HTTP {response.status_code})",
                          status=response.status_code) from None


def _error(response: requests.Response) -> NimbusError:
    try:
        body = response.json()
    except ValueError:
        body = None
    text = " ".join(response.text.split())[:200] if body is None else ""
    fallback = f"HTTP {response.status_code} {response.reason or ''}".strip() + (f": {text}" if text else "")
    return error_for_status(response.status_code, body, fallback)


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
    if isinstance(err, requests.Timeout):
        return "timed out"
    # urllib3 buries the operating system's reason deep inside its message.
    match = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", str(err))
    return match[1].strip() if match else "connection failed"
