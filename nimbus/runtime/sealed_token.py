"""Run tokens sealed with AWS KMS, so that a Batch job's environment holds no secret in clear.

Anyone allowed to describe a Batch job (`batch:DescribeJobs`, the Batch console) reads its environment.
The API therefore encrypts a run's token with the stage's KMS key (symmetric, `Encrypt`) and the
encryption context `{"nimbus:run": <run id>}`, and gives the job NIMBUS_RUN_TOKEN_SEALED (the ciphertext,
base64) instead of NIMBUS_RUN_TOKEN. The runner opens it with `Decrypt` and the same context: a sealed
token opens only for the run it was made for, and only for a role allowed `kms:Decrypt` on the key (the
stage's Batch job role).

Standard library only; boto3 is imported when a token is opened without a client (the local runner, which
gets its token in clear, never loads it). The request builders are plain data, so the API sends them
through its own retrying calls.
"""
from __future__ import annotations

import base64
import binascii
import os
from typing import Any, Mapping

SEALED_ENV = "NIMBUS_RUN_TOKEN_SEALED"
CONTEXT_KEY = "nimbus:run"  # the only encryption context key (the IAM policies allow no other)
DECRYPT_ATTEMPTS = 6  # botocore's standard retry mode: throttling and 5xx back off and try again


class SealedTokenError(Exception):
    """A sealed token that cannot be opened: malformed, made for another run, or KMS refused."""


def encryption_context(run_id: str) -> dict[str, str]:
    if not run_id:
        raise SealedTokenError("a sealed run token needs its run id (NIMBUS_RUN_ID)")
    return {CONTEXT_KEY: run_id}


def encrypt_request(key_id: str, run_id: str, token: str) -> dict[str, Any]:
    """KMS Encrypt's arguments. `key_id`: a key id, key ARN, alias name (`alias/...`) or alias ARN."""
    return {"KeyId": key_id, "Plaintext": token.encode("utf-8"), "EncryptionContext": encryption_context(run_id)}


def sealed_value(encrypted: Mapping[str, Any]) -> str:
    """The environment variable's value from Encrypt's answer: the ciphertext in base64."""
    return base64.b64encode(encrypted["CiphertextBlob"]).decode("ascii")


def decrypt_request(sealed: str, run_id: str) -> dict[str, Any]:
    """KMS Decrypt's arguments; SealedTokenError when `sealed` is not base64."""
    try:
        blob = base64.b64decode(sealed.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SealedTokenError(f"{SEALED_ENV} is not base64") from None
    if not blob:
        raise SealedTokenError(f"{SEALED_ENV} is empty")
    return {"CiphertextBlob": blob, "EncryptionContext": encryption_context(run_id)}


def opened_token(decrypted: Mapping[str, Any]) -> str:
    try:
        return decrypted["Plaintext"].decode("utf-8")
    except UnicodeDecodeError:
        raise SealedTokenError(f"{SEALED_ENV} does not hold a run token") from None


def open_sealed(sealed: str, run_id: str, *, kms=None, env: Mapping[str, str] | None = None) -> str:
    """The run token in `sealed`, decrypted with KMS for `run_id`.

    Without `kms`, a client is made for the region of AWS_REGION or AWS_DEFAULT_REGION in `env` (default:
    this process's environment; Batch sets both). Raises SealedTokenError with KMS's reason.
    """
    request = decrypt_request(sealed, run_id)
    if kms is None:
        kms = _kms_client(os.environ if env is None else env)
    from botocore.exceptions import BotoCoreError, ClientError  # here: boto3 is an optional install (aws-runner)

    try:
        answer = kms.decrypt(**request)
    except ClientError as err:
        error = err.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        if code == "InvalidCiphertextException":
            raise SealedTokenError(f"{SEALED_ENV} does not open for run {run_id} (made for another run, or "
                                   "damaged)") from None
        if code in ("AccessDeniedException", "AccessDenied"):
            raise SealedTokenError(f"this job's role may not decrypt {SEALED_ENV} ({message}): it needs "
                                   "kms:Decrypt on the stage's run token key") from None
        raise SealedTokenError(f"KMS could not decrypt {SEALED_ENV}: {code} {message}".rstrip()) from None
    except BotoCoreError as err:  # no credentials, unreachable endpoint, …
        raise SealedTokenError(f"KMS could not decrypt {SEALED_ENV}: {err}") from None
    return opened_token(answer)


def _kms_client(env: Mapping[str, str]):
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        raise SealedTokenError(f"opening {SEALED_ENV} needs the AWS region (AWS_REGION or AWS_DEFAULT_REGION)")
    try:  # here: boto3 is an optional install (nimbus-ml[aws-runner]) that only a Batch runner needs
        import boto3
        from botocore.config import Config
    except ImportError:
        raise SealedTokenError(f"opening {SEALED_ENV} needs boto3, which this image lacks") from None
    return boto3.client("kms", region_name=region,
                        config=Config(retries={"mode": "standard", "max_attempts": DECRYPT_ATTEMPTS}))
