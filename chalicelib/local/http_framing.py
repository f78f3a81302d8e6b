"""How the local platform's HTTP server frames requests: waitress's parser, stricter where the platform needs it.

waitress reads each request (headers, then the whole body, de-chunked) before a worker thread sees it,
and refuses malformed framing itself: a Content-Length that is not digits (negative, non-numeric, or
two values), a bad chunk, an unknown Transfer-Encoding, over-long headers. On top of that:

- a body's limit depends on the request: an API route takes MAX_BODY (the app's limit, Lambda's);
  only a PUT to a valid presigned upload URL takes up to MAX_UPLOAD, and a PUT to an invalid one is
  refused before its body is read, so a client without a signed URL cannot make the server spool
  gigabytes;
- Content-Length together with Transfer-Encoding is refused (RFC 9112 section 6.1 allows it): a proxy
  in front could frame the body by the other one, which is how requests are smuggled;
- the headers must arrive within HEADER_SECONDS of the request's first byte: a client dripping a
  byte at a time never goes idle long enough for the idle timeout;
- every error the edge answers has the API's JSON shape (`{"code", "message", "field"?}`);
- a body too big to wait in memory waits in a temporary file in the platform's own spool folder, not
  the system's temporary folder (often a RAM disk, too small for a model upload).
"""
from __future__ import annotations

import json
import tempfile
import time
from functools import partial
from http import HTTPStatus
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from waitress.buffers import OverflowableBuffer, TempfileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.receiver import ChunkedReceiver, FixedStreamReceiver
from waitress.task import ErrorTask
from waitress.utilities import Error, RequestEntityTooLarge

from chalicelib.api.routing import MAX_BODY
from chalicelib.errors import Invalid, NimbusError, TooLarge
from chalicelib.store.blob_server import is_blob_path
from nimbus import error_codes as codes

MAX_UPLOAD = 5 * 1024 ** 3  # one presigned PUT, as S3 allows
HEADER_SECONDS = 30.0
SEND_BYTES = 1024 * 1024  # the most one send() is offered

UploadRefusal = Callable[[str, dict], "NimbusError | None"]  # (raw path, query) -> why an upload is refused


class EdgeError(Error):
    """A waitress error answer that speaks the API's JSON error shape."""

    def __init__(self, error: NimbusError, status: int | None = None):
        super().__init__(error.message)
        self.error, self.code = error, status or error.status
        self.reason = _phrase(self.code)

    def to_response(self, ident=None):
        body = json.dumps(self.error.to_dict()).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body

    @classmethod
    def of(cls, error: Error, body_limit: int | None = None) -> "EdgeError":
        """The JSON form of an error waitress found itself."""
        if isinstance(error, EdgeError):
            return error
        if isinstance(error, RequestEntityTooLarge):
            limit = f"{body_limit:,} bytes" if body_limit else "its limit"
            return cls(TooLarge(f"the request body is over {limit}", field="body"))
        message = str(error.body).strip() or error.reason
        field = next((name for name in ("Content-Length", "Transfer-Encoding") if name.lower() in message.lower()),
                     "Transfer-Encoding" if "chunk" in message.lower() else None)
        if error.code >= 500 and error.code != 501:  # an unexpected failure in a worker: the log has it
            return cls(NimbusError("internal error"))
        return cls(NimbusError(message, code=codes.BAD_REQUEST, field=field), error.code)


class EdgeParser(HTTPRequestParser):
    """One request's parser: waitress's, with the body limit chosen per request and the checks above."""

    def __init__(self, adj, upload_refusal: UploadRefusal, spool: str):
        super().__init__(adj)
        self._upload_refusal, self._spool = upload_refusal, spool
        self._started = time.monotonic()  # made when the request's first bytes arrive
        self._refusal: EdgeError | None = None
        self.body_limit: int | None = None

    def received(self, data):
        if (not self.headers_finished and not self.completed
                and time.monotonic() - self._started > HEADER_SECONDS):
            self.parse_header(b"GET / HTTP/1.0\r\n")  # what the error answer needs to be written
            self.error = EdgeError(NimbusError(f"the request's headers took over {HEADER_SECONDS:g} s to arrive",
                                               code=codes.BAD_REQUEST), HTTPStatus.REQUEST_TIMEOUT)
            self.completed = True
            return len(data)
        consumed = super().received(data)
        if self.error is not None:
            self.error = self._refusal or EdgeError.of(self.error, self.body_limit)
            self.expect_continue = False  # a refused body must not be asked for with "100 Continue"
        return consumed

    def parse_header(self, header_plus):
        super().parse_header(header_plus)
        if header_plus == b"GET / HTTP/1.0\r\n":  # waitress's own stand-in before answering an error
            return
        if "TRANSFER_ENCODING" in self.headers:  # kept only in HTTP/1.0, which has no chunked bodies
            self._refuse(Invalid("HTTP/1.0 requests cannot have a Transfer-Encoding", field="Transfer-Encoding"))
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            self._refuse(Invalid("a request cannot have both Content-Length and Transfer-Encoding",
                                 field="Content-Length"))
        self.body_limit = self._limit()
        # waitress refuses a Content-Length (or chunked bytes received) >= its limit: exactly the limit passes.
        self.adj = _WithBodyLimit(self.adj, self.body_limit + 1)
        if self.body_rcv is not None:  # nothing is buffered yet: the same receiver, spilling into the spool
            buffer = _SpooledBuffer(self.adj.inbuf_overflow, self._spool)
            self.body_rcv = ChunkedReceiver(buffer) if self.chunked else FixedStreamReceiver(self.content_length, buffer)

    def _limit(self) -> int:
        if self.command == "PUT" and is_blob_path(self.path):
            refusal = self._upload_refusal(urlsplit(self.request_uri).path, dict(parse_qsl(self.query)))
            if refusal is not None:
                self._refuse(refusal)
            return MAX_UPLOAD
        return MAX_BODY

    def _refuse(self, error: NimbusError):
        self._refusal = EdgeError(error)
        raise ParsingError(error.message)  # waitress stops reading and answers the error: the body is never read


class _WithBodyLimit:
    """The server's adjustments, with this request's body limit."""

    def __init__(self, adj, max_request_body_size: int):
        self._adj, self.max_request_body_size = adj, max_request_body_size

    def __getattr__(self, name):
        return getattr(self._adj, name)


class _SpooledBuffer(OverflowableBuffer):
    """waitress's body buffer: in memory up to its overflow, then in an unnamed file in `folder`."""

    def __init__(self, overflow: int, folder: str):
        super().__init__(overflow)
        self._folder = folder

    def _set_large_buffer(self):
        old, self.buf = self.buf, _TempfileIn(self._folder, self.buf)
        if hasattr(old, "close"):
            old.close()
        self.overflowed = True


class _TempfileIn(TempfileBasedBuffer):
    def __init__(self, folder: str, from_buffer=None):
        self._folder = folder
        super().__init__(from_buffer)

    def newfile(self):
        return tempfile.TemporaryFile("w+b", dir=self._folder)  # unlinked at once: nothing outlives a crash


class _JsonErrorTask(ErrorTask):
    def execute(self):
        self.request.error = EdgeError.of(self.request.error)  # waitress makes some errors after parsing
        super().execute()


class _EdgeChannel(HTTPChannel):
    error_task_class = _JsonErrorTask

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # waitress offers `send` at most the socket's send buffer as it was on accepting (16 KiB before
        # TCP grows it): a download would go out 16 KiB per turn of the loop. The kernel takes what fits.
        self.sendbuf_len = max(self.sendbuf_len, SEND_BYTES)


def channel_class(upload_refusal: UploadRefusal, spool: str) -> type[HTTPChannel]:
    """The connection class of a server whose uploads `upload_refusal` vets, spooling large bodies in `spool`."""
    return type("EdgeChannel", (_EdgeChannel,), {
        "parser_class": staticmethod(partial(EdgeParser, upload_refusal=upload_refusal, spool=spool)),
    })


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
