"""The DatastoreAccess port's adapter: a Blobs view of the store behind a datastore, and its connection check.

`s3` datastores get a boto3 client of their own (their region, their `endpoint_url`, their access keys
or else the platform's credentials); `local` ones the LocalBlobs over their root, which the local
platform's blob endpoint serves (blob_server.py); the built-in `blob` one is the platform's own blob store. A store's refusal becomes Invalid with its own error code in
`details.store_code`, the field it concerns, and its message (which never holds a secret key).
"""
from __future__ import annotations

import os
from pathlib import Path

from chalicelib.aws_clients import client_config
from chalicelib.errors import Invalid, Unavailable
from chalicelib.settings import Settings
from chalicelib.store.blob_server import root_blobs
from chalicelib.store.blobs import Blobs

# The S3 error codes, by the field of the registration they concern.
_FIELD_OF_CODE = {
    "NoSuchBucket": "settings.bucket", "PermanentRedirect": "settings.region",
    "AuthorizationHeaderMalformed": "settings.region", "IllegalLocationConstraintException": "settings.region",
    "InvalidAccessKeyId": "credentials.access_key_id", "SignatureDoesNotMatch": "credentials.secret_access_key",
    "AccessDenied": "credentials", "InvalidToken": "credentials", "ExpiredToken": "credentials",
}


class StoreAccess:
    def __init__(self, settings: Settings, platform_blobs: Blobs):
        self.settings = settings
        self.platform_blobs = platform_blobs

    def open(self, location: dict, credentials: dict | None) -> Blobs:
        kind, settings = location["type"], location["settings"]
        if kind == "blob":
            return self.platform_blobs
        if kind == "local":
            return root_blobs(settings["root"], self.settings.public_url, self.settings.home / "signing.key")
        return self._s3(settings, credentials)

    def check(self, location: dict, credentials: dict | None) -> None:
        kind, settings = location["type"], location["settings"]
        if kind == "local":
            folder = Path(settings["root"], settings["path"]) if settings["path"] else Path(settings["root"])
            root = os.path.realpath(settings["root"])
            if os.path.commonpath([root, os.path.realpath(folder)]) != root:  # a symlink out of the root
                raise Invalid(f"settings.path {str(folder)!r} leads out of its root {settings['root']!r}",
                              field="settings.path")
            if not folder.is_dir():
                raise Invalid(f"settings.path {str(folder)!r} is not a folder on the platform's machine",
                              field="settings.path")
            if not os.access(folder, os.R_OK | os.X_OK):
                raise Invalid(f"the platform cannot read {str(folder)!r}", field="settings.path")
            return
        if kind == "s3":
            self._check_s3(settings, credentials)

    def _s3(self, settings: dict, credentials: dict | None) -> Blobs:
        from chalicelib.store.s3_blobs import S3Blobs  # here: boto3 loads only when an S3 datastore is used

        return S3Blobs(self._s3_client(settings, credentials), settings["bucket"])

    def _s3_client(self, settings: dict, credentials: dict | None):
        import boto3  # here: as in aws_clients.make_client
        from botocore.config import Config

        keys = {}
        if credentials:
            keys = {"aws_access_key_id": credentials["access_key_id"],
                    "aws_secret_access_key": credentials["secret_access_key"]}
        addressing = "path" if settings.get("endpoint_url") else "auto"
        # A user's store may be slow or unreachable: fewer attempts than the platform's own clients, so a
        # registration that cannot connect is refused within seconds.
        config = client_config(Config(signature_version="s3v4", s3={"addressing_style": addressing},
                                      retries={"mode": "standard", "total_max_attempts": 2},
                                      connect_timeout=3, read_timeout=10))
        return boto3.session.Session().client("s3", region_name=settings["region"],
                                              endpoint_url=settings.get("endpoint_url"), config=config, **keys)

    def _check_s3(self, settings: dict, credentials: dict | None) -> None:
        from botocore.exceptions import (  # here: as in _s3
            BotoCoreError, ClientError, ConnectionError as BotoConnectionError, NoCredentialsError,
        )

        client = self._s3_client(settings, credentials)
        try:
            client.list_objects_v2(Bucket=settings["bucket"], Prefix=settings["prefix"], MaxKeys=1)
        except ClientError as err:
            error = err.response.get("Error", {})
            code = error.get("Code") or str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            message = error.get("Message") or code
            raise Invalid(f"the store refused the connection check: {code}: {message}",
                          field=_FIELD_OF_CODE.get(code, "settings"), details={"store_code": code}) from None
        except NoCredentialsError:
            raise Invalid("no credentials: give an access key pair, or run the platform with an AWS role",
                          field="credentials", details={"store_code": "NoCredentials"}) from None
        except BotoConnectionError as err:
            raise Invalid(f"the store is unreachable: {type(err).__name__}", field="settings.endpoint_url",
                          details={"store_code": "EndpointConnectionError"}) from None
        except BotoCoreError as err:
            raise Unavailable(f"the connection check failed: {type(err).__name__}") from None
