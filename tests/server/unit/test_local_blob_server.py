"""LocalBlobs' signed URLs, its signing key and the serve_blob endpoint."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from chalicelib.errors import Forbidden
from chalicelib.store import local_blobs as local_blobs_module
from chalicelib.store.blob_server import serve_blob
from chalicelib.store.local_blobs import LocalBlobs


@pytest.fixture
def blobs(tmp_path) -> LocalBlobs:
    return LocalBlobs(tmp_path / "blobs", "http://127.0.0.1:9", signing_key_file=tmp_path / "signing.key")


def call(blobs, method, url, data=None, content_length="auto", path=None, query_changes=None):
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | (query_changes or {})
    body = data if hasattr(data, "read") else io.BytesIO(data or b"")
    length = (len(data) if isinstance(data, bytes) else None) if content_length == "auto" else content_length
    status, headers, content = serve_blob(blobs, method, path or parts.path, query, {}, body, length)
    if hasattr(content, "read"):
        with content:
            return status, headers, content.read()
    return status, headers, b"".join(content)


def error(response) -> dict:
    status, headers, body = response
    assert headers["Content-Type"] == "application/json"
    return {"status": status, **json.loads(body)}


def test_get_streams_the_file_with_download_headers(blobs):
    blobs.put_bytes("models/m1/weights.bin", b"abc")
    status, headers, body = call(blobs, "GET", blobs.presign_get("models/m1/weights.bin", 60))
    assert (status, body) == (200, b"abc")
    assert headers["Content-Length"] == "3"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith('attachment; filename="weights.bin"')


def test_expired_url_is_forbidden(blobs):
    blobs.put_bytes("k", b"x")
    reply = error(call(blobs, "GET", blobs.presign_get("k", -1)))
    assert reply["status"] == 403 and reply["code"] == "Forbidden" and "expired" in reply["message"]


def test_expiry_checked_against_the_clock(blobs, monkeypatch):
    url = blobs.presign_put("k", 60)
    now = local_blobs_module.time.time()
    monkeypatch.setattr(local_blobs_module.time, "time", lambda: now + 120)
    assert call(blobs, "PUT", url, b"x")[0] == 403
    assert blobs.find("k") is None


def test_tampered_signature_or_expiry_is_forbidden(blobs):
    blobs.put_bytes("k", b"x")
    url = blobs.presign_get("k", 60)
    signature = dict(parse_qsl(urlsplit(url).query))["signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    reply = error(call(blobs, "GET", url, query_changes={"signature": flipped}))
    assert reply == {"status": 403, "code": "Forbidden", "message": "signature mismatch"}
    assert error(call(blobs, "GET", url, query_changes={"expires": "9999999999"}))["status"] == 403
    assert error(call(blobs, "GET", url, query_changes={"signature": "é"}))["status"] == 403
    assert error(call(blobs, "GET", url, query_changes={"expires": "soon"}))["status"] == 403
    # A signature for one key does not open another.
    blobs.put_bytes("other", b"y")
    assert error(call(blobs, "GET", url, path="/blobs/other"))["status"] == 403


def test_verify_raises_forbidden(blobs):
    query = dict(parse_qsl(urlsplit(blobs.presign_put("k", 60)).query))
    blobs.verify("put", "k", query["expires"], query["signature"])
    with pytest.raises(Forbidden, match="signature mismatch"):
        blobs.verify("get", "k", query["expires"], query["signature"])


def test_op_must_match_method(blobs):
    blobs.put_bytes("k", b"original")
    reply = error(call(blobs, "PUT", blobs.presign_get("k", 60), b"overwrite"))
    assert reply["status"] == 403
    assert blobs.get_bytes("k") == b"original"
    assert error(call(blobs, "GET", blobs.presign_put("k", 60)))["status"] == 403
    # Relabelling the op breaks the signature.
    url = blobs.presign_get("k", 60)
    assert error(call(blobs, "PUT", url, b"overwrite", query_changes={"op": "put"}))["status"] == 403
    assert blobs.get_bytes("k") == b"original"


def test_invalid_key_is_400(blobs):
    url = blobs.presign_get("k", 60)
    for path in ["/blobs/../signing.key", "/blobs/a/%2E%2E/b", "/blobs/", "/blobs/a//b"]:
        reply = error(call(blobs, "GET", url, path=path))
        assert reply["status"] == 400 and reply["code"] == "Invalid", path


def test_missing_blob_is_404_and_other_errors(blobs):
    assert error(call(blobs, "GET", blobs.presign_get("nope", 60)))["status"] == 404
    assert error(call(blobs, "PUT", blobs.presign_put("k", 60), b"x", content_length=None))["status"] == 411
    assert error(call(blobs, "DELETE", blobs.presign_put("k", 60)))["status"] == 405
    assert error(call(blobs, "GET", "http://127.0.0.1:9/elsewhere"))["status"] == 404


def test_short_body_is_rejected_and_leaves_nothing(blobs):
    reply = error(call(blobs, "PUT", blobs.presign_put("k", 60), b"abc", content_length=10))
    assert reply["status"] == 400
    assert blobs.find("k") is None
    assert list((blobs.root / local_blobs_module.TMP_DIR).iterdir()) == []


def test_unexpected_errors_are_500_without_details(blobs, monkeypatch):
    def explode(*args):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(blobs, "open_for_read", explode)
    status, _, body = call(blobs, "GET", blobs.presign_get("k", 60))
    assert status == 500 and b"secret" not in body
    assert json.loads(body)["code"] == "InternalError"


def test_signing_key_file_is_private(blobs):
    blobs.presign_get("k", 60)
    mode = stat.S_IMODE(blobs.signing_key_file.stat().st_mode)
    assert mode == 0o600
    assert len(blobs.signing_key_file.read_bytes()) == 32


def test_two_instances_share_the_key(blobs, tmp_path):
    other = LocalBlobs(tmp_path / "blobs", "http://127.0.0.1:9", signing_key_file=tmp_path / "signing.key")
    url = other.presign_put("shared", 60)  # `other` creates the key, `blobs` reads it
    assert call(blobs, "PUT", url, b"hello")[0] == 200
    assert other.get_bytes("shared") == b"hello"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


class Trickle(io.RawIOBase):
    """A request body that hands out at most 64 KiB per read, like a socket."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.largest_read = data, 0, 0

    def readable(self):
        return True

    def read(self, size=-1):
        self.largest_read = max(self.largest_read, size)
        chunk = self.data[self.pos:self.pos + min(size, 64 * 1024)]
        self.pos += len(chunk)
        return chunk


def test_large_streamed_upload(blobs):
    data = bytes(range(251)) * (3 * 1024 * 1024 // 251 + 1000)  # a little over 3 MiB
    stream = Trickle(data)
    status, _, _ = call(blobs, "PUT", blobs.presign_put("big/file.bin", 60), stream, content_length=len(data))
    assert status == 200
    assert stream.largest_read <= 1024 * 1024  # read in chunks, never all at once
    assert blobs.find("big/file.bin").size == len(data)
    status, _, body = call(blobs, "GET", blobs.presign_get("big/file.bin", 60))
    assert status == 200 and body == data


def test_temp_files_never_listed(blobs):
    blobs.put_bytes("a/x", b"1")
    # A crash between writing and renaming leaves a temp file behind: it must stay invisible.
    (blobs.root / local_blobs_module.TMP_DIR / ".tmp-leftover").write_bytes(b"partial")
    blobs.write_stream("a/y", io.BytesIO(b"22"), 2)
    assert [b.key for b in blobs.list("").blobs] == ["a/x", "a/y"]
    assert [b.key for b in blobs.list(".").blobs] == []


def test_the_temp_files_of_writers_that_are_gone_are_removed_and_a_live_writers_kept(blobs):
    # Given temp files a kill left behind (a dead writer's, an old nameless one) and one a live writer holds
    blobs.put_bytes("a/x", b"1")
    temp = blobs.root / local_blobs_module.TMP_DIR
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    (temp / f".tmp-{finished.pid}-abcd1234").write_bytes(b"torn")
    (temp / ".tmp-leftover").write_bytes(b"torn")
    live = temp / f".tmp-{os.getpid()}-efgh5678"
    live.write_bytes(b"being written")

    # When the platform starts and sweeps
    # Then only the live writer's file remains, and the blobs
    assert blobs.remove_abandoned_temporaries() == 2
    assert [p.name for p in temp.iterdir()] == [live.name]
    assert blobs.get_bytes("a/x") == b"1" and [b.key for b in blobs.list("").blobs] == ["a/x"]


def test_a_write_names_its_temp_file_after_its_process(blobs, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(local_blobs_module.os, "replace", lambda tmp, target: (seen.append(tmp), real_replace(tmp, target)))
    blobs.put_bytes("a/x", b"1")
    assert Path(seen[0]).name.startswith(f".tmp-{os.getpid()}-")


def test_delete_prunes_empty_folders(blobs):
    blobs.put_bytes("deep/er/still/x", b"1")
    blobs.put_bytes("deep/y", b"2")
    blobs.delete("deep/er/still/x")
    assert not (blobs.root / "deep" / "er").exists()
    assert (blobs.root / "deep" / "y").is_file()
    blobs.put_bytes("deep/er/again", b"3")  # the pruned folders come back on demand
    assert blobs.get_bytes("deep/er/again") == b"3"


def test_a_key_cannot_be_both_file_and_folder(blobs):
    from chalicelib.errors import Conflict

    blobs.put_bytes("a", b"file")
    with pytest.raises(Conflict):
        blobs.put_bytes("a/b", b"nested")
    blobs.put_bytes("c/d", b"nested")
    with pytest.raises(Conflict):
        blobs.put_bytes("c", b"file")
    assert blobs.get_bytes("a") == b"file" and blobs.get_bytes("c/d") == b"nested"


def test_racing_processes_agree_on_one_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def make_key(_):
        instance = LocalBlobs(tmp_path / "blobs", "http://x", signing_key_file=tmp_path / "keys" / "signing.key")
        return instance._signing_key()

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(make_key, range(32)))
    assert len(keys) == 1
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["signing.key"]
