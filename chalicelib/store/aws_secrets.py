"""The Secrets port on AWS Secrets Manager. Every name is prefixed (default "nimbus/<table name>/"),
which keeps stages apart and lets IAM grant exactly `secret:nimbus/<table>/*`."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

from chalicelib.errors import Invalid, NimbusError, NotFound, Unavailable
from chalicelib.store.secrets import Secrets

_BUSY = {"ThrottlingException", "Throttling", "TooManyRequestsException", "InternalServiceError",
         "ServiceUnavailable", "RequestTimeout"}


@contextmanager
def _translated(name: str) -> Iterator[None]:
    try:
        yield
    except ClientError as err:
        error = err.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code == "ResourceNotFoundException":
            raise NotFound(f"no secret {name!r}", field="name") from err
        if code in _BUSY or status >= 500:
            raise Unavailable("the secret store is busy; retry shortly") from err
        if code == "InvalidRequestException" and "deletion" in message:
            # A force-deleted secret lingers for a few seconds before its name is free again.
            raise Unavailable(f"secret {name!r} is being deleted; retry shortly") from err
        if code in ("InvalidParameterException", "InvalidRequestException", "LimitExceededException"):
            raise Invalid(f"secret {name!r}: {message}", field="name") from err
        if code in ("AccessDeniedException", "AccessDenied"):
            raise NimbusError(f"this function may not use secret {name!r}: {message}") from err
        raise
    except (BotoConnectionError, HTTPClientError) as err:
        raise Unavailable("the secret store is unreachable; retry shortly") from err


class AwsSecrets(Secrets):
    def __init__(self, client, prefix: str):
        self.client = client
        self.prefix = prefix

    def _put(self, name: str, value: str) -> None:
        secret_id = self.prefix + name
        with _translated(name):
            try:
                self.client.put_secret_value(SecretId=secret_id, SecretString=value)
                return
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
            try:
                self.client.create_secret(Name=secret_id, SecretString=value)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") != "ResourceExistsException":
                    raise
                # Created concurrently: ours is the newer value.
                self.client.put_secret_value(SecretId=secret_id, SecretString=value)

    def _get(self, name: str) -> str:
        with _translated(name):
            try:
                response = self.client.get_secret_value(SecretId=self.prefix + name)
            except ClientError as err:
                # Reading a secret scheduled for deletion is an InvalidRequestException: it is gone.
                if err.response.get("Error", {}).get("Code") == "InvalidRequestException":
                    raise NotFound(f"no secret {name!r}", field="name") from err
                raise
        if "SecretString" not in response:
            raise NimbusError(f"secret {name!r} holds binary data, not a string")
        return response["SecretString"]

    def _delete(self, name: str) -> None:
        try:
            with _translated(name):
                self.client.delete_secret(SecretId=self.prefix + name, ForceDeleteWithoutRecovery=True)
        except NotFound:
            pass
