"""Builds the adapters the settings name.

Each adapter's module is imported only when built (start-up cost): the local backend never loads
boto3, and an AWS function never loads SQLite's adapter.
"""
from __future__ import annotations

from chalicelib.settings import Settings
from chalicelib.store.blobs import Blobs
from chalicelib.store.secrets import Secrets
from chalicelib.store.table import Table


def build_table(settings: Settings) -> Table:
    if settings.backend == "aws":
        from chalicelib.aws_clients import make_client  # here: each backend loads only its own adapter
        from chalicelib.store.dynamo_table import DynamoTable

        return DynamoTable(make_client("dynamodb", settings), settings.table_name)
    from chalicelib.store.sqlite_table import SqliteTable  # here: each backend loads only its own adapter

    settings.home.mkdir(parents=True, exist_ok=True)
    return SqliteTable(settings.home / "nimbus.db")


def build_blobs(settings: Settings) -> Blobs:
    if settings.backend == "aws":
        from chalicelib.aws_clients import make_client  # here: each backend loads only its own adapter
        from chalicelib.store.s3_blobs import S3Blobs

        return S3Blobs(make_client("s3", settings), settings.bucket)
    from chalicelib.store.local_blobs import LocalBlobs  # here: each backend loads only its own adapter

    return LocalBlobs(settings.home / "blobs", settings.public_url, signing_key_file=settings.home / "signing.key")


def build_secrets(settings: Settings) -> Secrets:
    if settings.backend == "aws":
        from chalicelib.aws_clients import make_client  # here: each backend loads only its own adapter
        from chalicelib.store.aws_secrets import AwsSecrets

        return AwsSecrets(make_client("secretsmanager", settings), settings.secret_name_prefix)
    from chalicelib.store.local_secrets import LocalSecrets  # here: each backend loads only its own adapter

    return LocalSecrets(settings.home)
