"""The Blobs port on S3 (or any S3-compatible endpoint)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import BinaryIO, Iterator

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

from chalicelib.errors import Invalid, NotFound, Unavailable
from chalicelib.store.blobs import BlobInfo, BlobPage, Blobs, check_key

# head_object has no body, so a missing key surfaces as the bare status code.
_MISSING = {"NoSuchKey", "NotFound", "404"}
# Worth retrying later; botocore has already retried these a few times by the time we see them.
_BUSY = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout",
         "ServiceUnavailable", "InternalError"}
_BAD_PARTS = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"}
_MAX_KEYS = 1000  # S3's own page ceiling; applied here so every S3-compatible endpoint agrees


@contextmanager
def _translated(key: str) -> Iterator[None]:
    try:
        yield
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in _MISSING:
            raise NotFound(f"no blob {key!r}", field="key") from err
        if code in _BUSY or status >= 500:
            raise Unavailable("the object store is busy; retry shortly") from err
        raise
    except (BotoConnectionError, HTTPClientError) as err:
        raise Unavailable("the object store is unreachable; retry shortly") from err


class S3Blobs(Blobs):
    def __init__(self, client, bucket: str):
        self.client = client
        self.bucket = bucket

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        with _translated(check_key(key)):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

    def get_bytes(self, key: str) -> bytes:
        with _translated(check_key(key)):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            with response["Body"] as body:
                return body.read()

    def open_read(self, key: str) -> BinaryIO:
        with _translated(check_key(key)):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]

    def find(self, key: str) -> BlobInfo | None:
        try:
            with _translated(check_key(key)):
                head = self.client.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return None
        return BlobInfo(key, head["ContentLength"], head["LastModified"].timestamp(), head.get("ETag"))

    def list(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> BlobPage:
        args = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max(1, min(limit, _MAX_KEYS))}
        if start_after:
            args["StartAfter"] = start_after
        with _translated(prefix):
            response = self.client.list_objects_v2(**args)
        blobs = [BlobInfo(o["Key"], o["Size"], o["LastModified"].timestamp(), o.get("ETag"))
                 for o in response.get("Contents", [])]
        more = response.get("IsTruncated") and blobs
        return BlobPage(blobs, blobs[-1].key if more else None)

    def delete(self, key: str) -> None:
        with _translated(check_key(key)):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def copy(self, source: str, target: str) -> None:
        check_key(target)
        # The managed copy switches to a multipart copy above copy_object's 5 GB limit.
        with _translated(check_key(source)):
            self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target)

    def presign_put(self, key: str, expires_in: int) -> str:
        return self._presign("put_object", key, expires_in)

    def presign_get(self, key: str, expires_in: int) -> str:
        return self._presign("get_object", key, expires_in)

    # --- multipart uploads ------------------------------------------------------------------------
    multipart = True

    def start_multipart(self, key: str) -> str:
        with _translated(check_key(key)):
            return self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

    def presign_part(self, key: str, upload_id: str, number: int, expires_in: int) -> str:
        return self._presign("upload_part", key, expires_in, UploadId=upload_id, PartNumber=number)

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        listed = {"Parts": [{"PartNumber": number, "ETag": etag} for number, etag in parts]}
        with _refused_upload(), _translated(check_key(key)):
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload=listed)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with _refused_upload(), _translated(check_key(key)):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def _presign(self, method: str, key: str, expires_in: int, **more) -> str:
        params = {"Bucket": self.bucket, "Key": check_key(key), **more}
        return self.client.generate_presigned_url(method, Params=params, ExpiresIn=expires_in)


@contextmanager
def _refused_upload() -> Iterator[None]:
    """A multipart upload the store does not know, or parts it did not get, is the caller's mistake."""
    try:
        yield
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code == "NoSuchUpload":
            raise NotFound("no such upload: it was completed, aborted or never started", field="upload_id") from err
        if code in _BAD_PARTS:
            raise Invalid(f"the store refused the parts: {code}", field="parts") from err
        raise
