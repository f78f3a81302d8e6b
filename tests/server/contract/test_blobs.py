"""The Blobs contract, run against both backends: S3 (moto) and the local folder."""
from __future__ import annotations

import io
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from chalicelib.errors import Invalid, NotFound
from chalicelib.store.blob_server import serve_blob
from chalicelib.store.local_blobs import LocalBlobs


def http(blobs, method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """An HTTP request to a presigned URL: through moto for S3, straight into serve_blob locally."""
    if not isinstance(blobs, LocalBlobs):
        response = requests.request(method, url, data=data)
        return response.status_code, response.content
    parts = urlsplit(url)
    body = io.BytesIO(data or b"")
    status, _, content = serve_blob(blobs, method, parts.path, dict(parse_qsl(parts.query)), {}, body,
                                    None if data is None else len(data))
    if hasattr(content, "read"):
        with content:
            return status, content.read()
    return status, b"".join(content)


def test_put_get_roundtrip(blobs):
    blobs.put_bytes("models/m1/model.json", b'{"a": 1}', content_type="application/json")
    assert blobs.get_bytes("models/m1/model.json") == b'{"a": 1}'
    blobs.put_bytes("models/m1/model.json", b"replaced")
    assert blobs.get_bytes("models/m1/model.json") == b"replaced"


def test_binary_and_empty_data(blobs):
    data = bytes(range(256)) * 1000
    blobs.put_bytes("bin/all-bytes", data)
    blobs.put_bytes("bin/empty", b"")
    assert blobs.get_bytes("bin/all-bytes") == data
    assert blobs.get_bytes("bin/empty") == b""


def test_find(blobs):
    assert blobs.find("a/b.txt") is None
    blobs.put_bytes("a/b.txt", b"12345")
    info = blobs.find("a/b.txt")
    assert info.key == "a/b.txt" and info.size == 5 and info.modified > 0
    assert blobs.find("a") is None  # a folder-like prefix is not a blob


def test_list_prefix_and_pagination(blobs):
    keys = [f"runs/r1/part-{i}" for i in range(5)]
    for key in keys:
        blobs.put_bytes(key, key.encode())
    blobs.put_bytes("runs/r10/other", b"x")
    blobs.put_bytes("other/thing", b"x")

    seen, start = [], None
    while True:
        page = blobs.list("runs/r1/", start_after=start, limit=2)
        assert len(page.blobs) <= 2
        seen += [b.key for b in page.blobs]
        if page.next is None:
            break
        start = page.next
    assert seen == keys

    # The prefix matches key strings, not just folders.
    assert [b.key for b in blobs.list("runs/r1").blobs] == keys + ["runs/r10/other"]
    assert [b.key for b in blobs.list("runs/r1/", start_after="runs/r1/part-2").blobs] == keys[3:]
    assert [b.key for b in blobs.list("").blobs] == ["other/thing"] + keys + ["runs/r10/other"]
    assert blobs.list("nothing/").blobs == [] and blobs.list("nothing/").next is None
    assert [b.size for b in blobs.list("runs/r10/").blobs] == [1]


def test_list_orders_like_s3(blobs):
    # "-" sorts before "/", so "a-b" comes before everything under "a/".
    for key in ["a/b", "a-b", "a/c/d", "a0"]:
        blobs.put_bytes(key, b"x")
    assert [b.key for b in blobs.list("a").blobs] == ["a-b", "a/b", "a/c/d", "a0"]
    assert [b.key for b in blobs.list("a", start_after="a/b").blobs] == ["a/c/d", "a0"]


def test_list_all(blobs):
    for i in range(3):
        blobs.put_bytes(f"p/{i}", b"x")
    assert [b.key for b in blobs.list_all("p/")] == ["p/0", "p/1", "p/2"]


def test_delete(blobs):
    blobs.put_bytes("d/x", b"1")
    blobs.delete("d/x")
    assert blobs.find("d/x") is None
    blobs.delete("d/x")  # deleting a missing blob is fine
    with pytest.raises(NotFound):
        blobs.get_bytes("d/x")


def test_delete_prefix(blobs):
    for key in ["del/a", "del/b/c", "del/b/d", "keep/a"]:
        blobs.put_bytes(key, b"x")
    assert blobs.delete_prefix("del/") == 3
    assert [b.key for b in blobs.list("").blobs] == ["keep/a"]


def test_copy(blobs):
    blobs.put_bytes("src/a", b"payload")
    blobs.copy("src/a", "dst/b")
    assert blobs.get_bytes("dst/b") == b"payload"
    assert blobs.get_bytes("src/a") == b"payload"
    blobs.put_bytes("dst/c", b"old")
    blobs.copy("src/a", "dst/c")
    assert blobs.get_bytes("dst/c") == b"payload"


def test_missing_blobs_raise_not_found(blobs):
    with pytest.raises(NotFound):
        blobs.get_bytes("no/such")
    with pytest.raises(NotFound):
        blobs.copy("no/such", "target")
    assert blobs.find("target") is None


@pytest.mark.parametrize("key", ["..", "a/../b", "/abs", "", "a//b", "a/", "./a", "a\\b"])
def test_invalid_keys_rejected(blobs, key):
    for call in (
        lambda: blobs.put_bytes(key, b"x"),
        lambda: blobs.get_bytes(key),
        lambda: blobs.find(key),
        lambda: blobs.delete(key),
        lambda: blobs.copy(key, "ok"),
        lambda: blobs.copy("ok", key),
        lambda: blobs.presign_put(key, 60),
        lambda: blobs.presign_get(key, 60),
    ):
        with pytest.raises(Invalid):
            call()


def test_presigned_put_then_get(blobs):
    data = bytes(range(256)) * 10
    key = "uploads/u1/data set.bin"  # a space must survive URL quoting
    status, _ = http(blobs, "PUT", blobs.presign_put(key, 300), data)
    assert status == 200
    assert blobs.get_bytes(key) == data
    status, body = http(blobs, "GET", blobs.presign_get(key, 300))
    assert (status, body) == (200, data)


def test_presigned_get_of_missing_blob_is_404(blobs):
    status, _ = http(blobs, "GET", blobs.presign_get("no/such", 300))
    assert status == 404


# --- S3 adapter specifics: error translation, without the network ------------------------------------
@pytest.mark.parametrize("code,status", [("SlowDown", 503), ("InternalError", 500), ("Whatever", 502)])
def test_s3_busy_errors_become_unavailable(code, status):
    import boto3
    from botocore.stub import Stubber

    from chalicelib.errors import Unavailable
    from chalicelib.store.s3_blobs import S3Blobs

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(Unavailable):
            S3Blobs(client, "bucket").get_bytes("k")
