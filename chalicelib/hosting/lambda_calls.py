"""AWS Lambda's errors as domain errors, and the alias and version calls both the host (lambda_host.py)
and a rollout (lambda_rollout.py) make.

Retries of throttled calls are botocore's (the client's retry configuration); this only translates.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

from chalicelib.errors import Conflict, Invalid, NimbusError, NotFound, Unavailable
from chalicelib.hosting import lambda_package as pkg

BUSY = {"TooManyRequestsException", "ThrottlingException", "Throttling", "ServiceException",
        "EC2ThrottledException", "ENILimitReachedException", "ResourceNotReadyException",
        "SubnetIPAddressLimitReachedException", "RequestTimeout"}
CONFLICT = {"ResourceConflictException", "PreconditionFailedException", "ResourceInUseException"}
INVALID = {"InvalidParameterValueException", "CodeStorageExceededException", "RequestTooLargeException",
           "InvalidRequestContentException", "CodeVerificationFailedException", "InvalidCodeSignatureException"}


def error_code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Lambda's errors as domain errors; `action` says what was being done, for the message."""
    try:
        yield
    except ClientError as err:
        code, message = error_code(err), err.response.get("Error", {}).get("Message", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code == "ResourceNotFoundException":
            raise NotFound(f"{action}: {message or 'not found'}") from err
        if code in BUSY or status >= 500:
            raise Unavailable(f"{action}: AWS Lambda is busy ({code}); retry shortly") from err
        if code in CONFLICT:
            raise Conflict(f"{action}: the function is being changed by another request ({message}); retry") from err
        if code in INVALID:
            raise Invalid(f"{action}: {message}", field="config") from err
        if code in ("AccessDeniedException", "AccessDenied"):
            raise NimbusError(f"{action}: the API function is not allowed to ({message})") from err
        raise NimbusError(f"{action}: {code} {message}".strip()) from err
    except (BotoConnectionError, HTTPClientError) as err:
        raise Unavailable(f"{action}: AWS Lambda is unreachable; retry shortly") from err


def find_alias(client, name: str) -> dict | None:
    try:
        with translated(f"reading alias {pkg.ALIAS} of {name}"):
            return client.get_alias(FunctionName=name, Name=pkg.ALIAS)
    except NotFound:
        return None


def delete_version(client, name: str, version: str, *, still_routed_ok: bool = False) -> bool:
    """True when the version is gone (deleted now or before)."""
    try:
        with translated(f"deleting version {version} of {name}"):
            client.delete_function(FunctionName=name, Qualifier=version)
    except NotFound:
        pass
    except Conflict:
        # Only when replacing a version: Lambda keeps a version an alias still routes to, and a
        # version left behind costs storage, not correctness.
        if not still_routed_ok:
            raise
        return False
    return True
