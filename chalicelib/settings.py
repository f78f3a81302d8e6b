"""One typed settings object, read from the environment once per process."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from nimbus.home import nimbus_home


@dataclass(frozen=True)
class Settings:
    backend: str = "local"  # "local" (SQLite + filesystem) or "aws" (DynamoDB + S3)
    home: Path = field(default_factory=nimbus_home)  # local backend state
    table_name: str = "nimbus"
    bucket: str = "nimbus-artifacts"
    region: str = "us-east-1"
    dynamodb_endpoint: str | None = None  # any DynamoDB-compatible endpoint
    s3_endpoint: str | None = None  # any S3-compatible endpoint
    public_url: str = "http://127.0.0.1:8000"  # where the local platform serves its presigned URLs
    presign_seconds: int = 3600
    # Execution role of the scoring functions (AWS): its ARN, or just its name in this account.
    scoring_role_arn: str = ""
    secrets_prefix: str = ""  # Secrets Manager name prefix; empty: "nimbus/<table name>/"
    codebuild_project: str = ""  # builds environment images (chalicelib/compute/image_build.py); empty: none
    # AWS Batch (chalicelib/compute/batch*.py). Roles: an ARN, or a name in this account.
    api_url: str = ""  # where a Batch job's runner reaches the API (the API Gateway stage URL)
    runner_image: str = ""  # the runner's container image, for runs naming no environment
    batch_job_role_arn: str = ""  # the runner container's role
    batch_execution_role_arn: str = ""  # Fargate pulls the image and writes logs with it
    batch_instance_role_arn: str = ""  # EC2 compute environments: an instance profile
    batch_service_role_arn: str = ""  # empty: Batch's service-linked role
    # KMS key (id, ARN or `alias/...`) that seals run tokens in Batch jobs' environments (nimbus/runtime/sealed_token.py).
    # Empty (off AWS, or a stage set up by hand without it): jobs get their token in clear. infra/ always sets it.
    run_token_key: str = ""
    # Folders under which a platform admin may register `local` datastores (NIMBUS_DATASTORE_ROOTS, separated
    # by os.pathsep); none by default: the platform's disk is reached only where its operator says.
    datastore_roots: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        backend = env.get("NIMBUS_BACKEND", "local")
        if backend not in ("local", "aws"):
            raise ValueError(f"NIMBUS_BACKEND must be 'local' or 'aws', not {backend!r}")
        return cls(
            backend=backend,
            home=nimbus_home(env),
            table_name=env.get("NIMBUS_TABLE", cls.table_name),
            bucket=env.get("NIMBUS_BUCKET", cls.bucket),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or cls.region,
            dynamodb_endpoint=env.get("NIMBUS_DYNAMODB_ENDPOINT") or None,
            s3_endpoint=env.get("NIMBUS_S3_ENDPOINT") or None,
            public_url=env.get("NIMBUS_PUBLIC_URL", cls.public_url).rstrip("/"),
            presign_seconds=int(env.get("NIMBUS_PRESIGN_SECONDS", cls.presign_seconds)),
            scoring_role_arn=env.get("NIMBUS_SCORING_ROLE_ARN", ""),
            secrets_prefix=env.get("NIMBUS_SECRETS_PREFIX", ""),
            codebuild_project=env.get("NIMBUS_CODEBUILD_PROJECT", ""),
            api_url=env.get("NIMBUS_API_URL", "").rstrip("/"),
            runner_image=env.get("NIMBUS_RUNNER_IMAGE", ""),
            batch_job_role_arn=env.get("NIMBUS_BATCH_JOB_ROLE_ARN", ""),
            batch_execution_role_arn=env.get("NIMBUS_BATCH_EXECUTION_ROLE_ARN", ""),
            batch_instance_role_arn=env.get("NIMBUS_BATCH_INSTANCE_ROLE_ARN", ""),
            batch_service_role_arn=env.get("NIMBUS_BATCH_SERVICE_ROLE_ARN", ""),
            run_token_key=env.get("NIMBUS_RUN_TOKEN_KEY", "").strip(),
            datastore_roots=_roots(env.get("NIMBUS_DATASTORE_ROOTS", "")),
        )

    @property
    def secret_name_prefix(self) -> str:
        """Prefixes every Secrets Manager name, so stages sharing an account keep apart."""
        return self.secrets_prefix or f"nimbus/{self.table_name}/"


def _roots(value: str) -> tuple[str, ...]:
    """Absolute, normalised folders (symlinks resolved: a root is where its files really are)."""
    roots = []
    for part in filter(None, (p.strip() for p in value.split(os.pathsep))):
        if not os.path.isabs(part):
            raise ValueError(f"NIMBUS_DATASTORE_ROOTS holds {part!r}: every root must be an absolute path")
        roots.append(os.path.realpath(part))
    return tuple(roots)


@lru_cache(maxsize=1)
def current() -> Settings:
    return Settings.from_env()
