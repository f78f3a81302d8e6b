"""Typed errors. An API error carries the server's status, code, message and the field it blames.

The SDK's exception for an error answer is keyed by its code (nimbus/error_codes.py, the table the
server answers from); only an answer without a known code is judged by its HTTP status.
"""
from __future__ import annotations

from typing import Any

from nimbus import error_codes as codes


class NimbusError(Exception):
    """Base of every error the SDK raises."""

    status: int | None = None
    code: str = "Error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 field: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.field = field
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class ConfigurationError(NimbusError):
    """No service is configured, or the configuration on disk is unreadable."""

    code = "Configuration"  # the SDK's own: the service never answers it


class InvalidError(NimbusError, ValueError):
    """The request, or a value given to the SDK, is invalid."""

    status, code = codes.INVALID.status, codes.INVALID.code


class AuthenticationError(NimbusError):
    status, code = codes.UNAUTHORIZED.status, codes.UNAUTHORIZED.code


class ForbiddenError(NimbusError):
    status, code = codes.FORBIDDEN.status, codes.FORBIDDEN.code


class NotFoundError(NimbusError):
    status, code = codes.NOT_FOUND.status, codes.NOT_FOUND.code


class ConflictError(NimbusError):
    status, code = codes.CONFLICT.status, codes.CONFLICT.code


class TooLargeError(NimbusError):
    status, code = codes.TOO_LARGE.status, codes.TOO_LARGE.code


class ServiceUnavailableError(NimbusError):
    """The service is briefly unavailable or unreachable: safe to retry."""

    status, code = codes.UNAVAILABLE.status, codes.UNAVAILABLE.code


class InternalServerError(NimbusError):
    """The service failed unexpectedly; its log has the details."""

    status, code = codes.INTERNAL_ERROR.status, codes.INTERNAL_ERROR.code


class WebserviceScoringError(NimbusError):
    """The endpoint could not score a request; `status`, `code` and the message come from the service."""

    status, code = codes.SCORING_ERROR.status, codes.SCORING_ERROR.code


# Every code of the table, and the exception it raises.
_BY_CODE: dict[str, type[NimbusError]] = {
    codes.INVALID.code: InvalidError,
    codes.UNAUTHORIZED.code: AuthenticationError,
    codes.FORBIDDEN.code: ForbiddenError,
    codes.NOT_FOUND.code: NotFoundError,
    codes.CONFLICT.code: ConflictError,
    codes.TOO_LARGE.code: TooLargeError,
    codes.UNAVAILABLE.code: ServiceUnavailableError,
    codes.INTERNAL_ERROR.code: InternalServerError,
    # The request's method, content type or framing is not one the service takes: the request is invalid.
    codes.METHOD_NOT_ALLOWED.code: InvalidError,
    codes.LENGTH_REQUIRED.code: InvalidError,
    codes.UNSUPPORTED_MEDIA_TYPE.code: InvalidError,
    codes.BAD_REQUEST.code: InvalidError,
    codes.SCORING_ERROR.code: WebserviceScoringError,
    codes.SCORING_TIMEOUT.code: WebserviceScoringError,
    codes.SCORING_FUNCTION_ERROR.code: WebserviceScoringError,
    codes.DEPLOYMENT_FAILED.code: WebserviceScoringError,
    codes.PAYLOAD_TOO_LARGE.code: TooLargeError,
    codes.NO_DEPLOYMENT.code: ServiceUnavailableError,
}

# An answer without a known code: by its status. Throttling and gateway hiccups from AWS in front of
# the API (429, 502, 504, which carry no code) mean the same thing to a caller: wait and retry.
_BY_STATUS: dict[int, type[NimbusError]] = {
    **{cls.status: cls for cls in (InvalidError, AuthenticationError, ForbiddenError, NotFoundError, ConflictError,
                                   TooLargeError, ServiceUnavailableError, InternalServerError)},
    429: ServiceUnavailableError, 502: ServiceUnavailableError, 504: ServiceUnavailableError,
}


def error_class(code: Any, status: int) -> type[NimbusError]:
    """The exception for an error answer: by its code, else (no code, or one this version does not
    know) by its status, else NimbusError."""
    return (_BY_CODE.get(code) if isinstance(code, str) else None) or _BY_STATUS.get(status, NimbusError)


def error_for_status(status: int, body: Any, fallback_message: str) -> NimbusError:
    """The typed error for an HTTP error response; `body` is the decoded JSON, if any."""
    body = body if isinstance(body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else fallback_message
    code = body.get("code") if isinstance(body.get("code"), str) else None
    return error_class(code, status)(
        message, status=status, code=code, field=body.get("field") if isinstance(body.get("field"), str) else None,
        details=body.get("details") if isinstance(body.get("details"), dict) else None)
