"""AWS calls of the Batch adapter, and their errors as domain errors.

Batch (and KMS, for sealed run tokens) throttle their control planes hard, a few requests per second
per account. Their clients come from chalicelib/aws_clients.py, whose botocore retries (adaptive mode,
bounded attempts) absorb throttling, 5xx and connection failures; what is left is reported as
Unavailable, and other errors become Invalid or NimbusError.
"""
from __future__ import annotations

from typing import Any, Callable

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

from chalicelib.aws_clients import make_client
from chalicelib.errors import Invalid, NimbusError, Unavailable
from chalicelib.compute.batch.spec import BatchRoles
from chalicelib.settings import Settings

_THROTTLED = {"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}


def error_code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def retryable(err: BaseException) -> bool:
    if isinstance(err, (BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error_code(err) in _THROTTLED or status >= 500
    return False


def translate_batch_error(action: str, err: BaseException, field: str | None = None) -> NimbusError:
    if retryable(err):
        return Unavailable(f"{action}: AWS Batch is busy or unreachable; retry shortly")
    assert isinstance(err, ClientError)
    code, message = error_code(err), err.response.get("Error", {}).get("Message", "")
    if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
        return NimbusError(f"{action}: the API is not allowed to ({message}); its policy grants Batch resources "
                           "named after the stage's table only")
    if code == "ClientException":  # Batch's answer to any bad request: a missing queue, a bad setting
        return Invalid(f"{action}: {message}", field=field)
    return NimbusError(f"{action}: {code} {message}".strip())


class Calls:
    """AWS calls whose failures become domain errors: `translate` (default: Batch's) turns the error left
    after botocore's own retries (adaptive mode, chalicelib/aws_clients.py) into Unavailable, Invalid or a
    plain NimbusError."""

    def __init__(self, client, translate: Callable[..., NimbusError] | None = None):
        # `client`: a client, or a function making one on first use (keeps cold starts short)
        self._client = client
        self.translate = translate or translate_batch_error

    def __call__(self, operation: str, action: str, *, field: str | None = None, **kwargs: Any) -> dict:
        try:
            return getattr(self.client(), operation)(**kwargs)
        except (ClientError, BotoConnectionError, HTTPClientError) as err:
            raise self.translate(action, err, field) from err

    def client(self):
        if callable(self._client) and not hasattr(self._client, "meta"):
            self._client = self._client()
        return self._client


def lazy_client(settings: Settings, client, service: str = "batch"):
    """The given client, or a function that makes one (of `service`) when first needed."""
    if client is not None:
        return client
    return lambda: make_client(service, settings)


class RoleArns:
    """Settings hold role ARNs or names (the stage config cannot know the account id): a name is completed
    with this account's id from sts:GetCallerIdentity, which needs no permission."""

    def __init__(self, settings: Settings, sts_client=None):
        self.settings, self._sts, self._prefix = settings, sts_client, None

    def roles(self) -> BatchRoles:
        s = self.settings
        return BatchRoles(self._arn("role", s.batch_job_role_arn), self._arn("role", s.batch_execution_role_arn),
                          self._arn("instance-profile", s.batch_instance_role_arn),
                          self._arn("role", s.batch_service_role_arn))

    def _arn(self, kind: str, configured: str) -> str:
        if not configured or configured.startswith("arn:"):
            return configured
        if self._prefix is None:
            sts = self._sts or make_client("sts", self.settings)
            try:
                caller = sts.get_caller_identity()
            except (ClientError, BotoConnectionError, HTTPClientError) as err:
                raise Unavailable("reading this account's id failed; retry shortly") from err
            self._prefix = f"arn:{caller['Arn'].split(':')[1]}:iam::{caller['Account']}"
        return f"{self._prefix}:{kind}/{configured}"
