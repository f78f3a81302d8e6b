"""Builds the adapters the settings name. Imports are lazy so a function loads only its backend."""
from __future__ import annotations

from chalicelib.settings import Settings
from chalicelib.store.blobs import Blobs
from chalicelib.store.secrets import Secrets
from chalicelib.store.table import Table


def build_table(settings: Settings) -> Table:
    if settings.backend == "aws":
        import boto3

        from chalicelib.store.dynamo_table import DynamoTable

        client = boto3.client("dynamodb", region_name=settings.region, endpoint_url=settings.dynamodb_endpoint)
        return DynamoTable(client, settings.table_name)
    from chalicelib.store.sqlite_table import SqliteTable

    settings.home.mkdir(parents=True, exist_ok=True)
    return SqliteTable(settings.home / "nimbus.db")


def build_blobs(settings: Settings) -> Blobs:
    if settings.backend == "aws":
        import boto3

        from chalicelib.store.s3_blobs import S3Blobs

        from botocore.config import Config

        # SigV4 presigned URLs (boto3 would otherwise sign them with SigV2 in us-east-1); path-style
        # addressing for S3-compatible stores behind a plain endpoint URL.
        config = Config(signature_version="s3v4", s3={"addressing_style": "path" if settings.s3_endpoint else "auto"})
        client = boto3.client("s3", region_name=settings.region, endpoint_url=settings.s3_endpoint, config=config)
        return S3Blobs(client, settings.bucket)
    from chalicelib.store.local_blobs import LocalBlobs

    return LocalBlobs(settings.home / "blobs", settings.public_url, signing_key_file=settings.home / "signing.key")


def build_secrets(settings: Settings) -> Secrets:
    if settings.backend == "aws":
        import boto3

        from chalicelib.store.aws_secrets import AwsSecrets

        return AwsSecrets(boto3.client("secretsmanager", region_name=settings.region), settings.secret_name_prefix)
    from chalicelib.store.local_secrets import LocalSecrets

    return LocalSecrets(settings.home)
