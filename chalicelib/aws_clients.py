"""Every boto3 client of the server, made in one place, with botocore's retries.

Botocore's adaptive mode retries throttling, 5xx and connection errors with back-off and, under
sustained throttling, slows the client's own request rate; attempts are bounded, so a request that
still fails becomes the caller's error (translated to a domain error by each adapter) well within the
API function's timeout. No adapter adds a retry loop of its own on top.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.settings import Settings

if TYPE_CHECKING:
    from botocore.config import Config

MAX_ATTEMPTS = 6  # the first try and five retries
RETRIES = {"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS}
TIMEOUTS = {"connect_timeout": 5, "read_timeout": 20}


def client_config(extra: Config | None = None) -> Config:
    """The retry and timeout configuration every client gets, merged with a service's own settings."""
    from botocore.config import Config  # here: boto3 loads with the first client, never on the local backend

    base = Config(retries=dict(RETRIES), **TIMEOUTS)
    return base.merge(extra) if extra is not None else base


def s3_config(settings: Settings) -> Config:
    from botocore.config import Config  # here: as in client_config

    # SigV4 presigned URLs (boto3 would otherwise sign them with SigV2 in us-east-1); path-style
    # addressing for S3-compatible stores behind a plain endpoint URL.
    return Config(signature_version="s3v4", s3={"addressing_style": "path" if settings.s3_endpoint else "auto"})


def make_client(service: str, settings: Settings) -> Any:
    """A client of `service` for the settings' region and endpoint (DynamoDB and S3 may point elsewhere)."""
    endpoint = {"dynamodb": settings.dynamodb_endpoint, "s3": settings.s3_endpoint}.get(service)
    import boto3  # here: boto3 costs ~0.1 s to import, which the local platform never pays

    extra = s3_config(settings) if service == "s3" else None
    return boto3.client(service, region_name=settings.region, endpoint_url=endpoint, config=client_config(extra))
