"""Typed errors. An API error carries the server's status, code, message and the field it blames."""
from __future__ import annotations

from typing import Any


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

    code = "Configuration"


class InvalidError(NimbusError, ValueError):
    """The request, or a value given to the SDK, is invalid."""

    status = 400
    code = "Invalid"


class AuthenticationError(NimbusError):
    status = 401
    code = "Unauthorized"


class ForbiddenError(NimbusError):
    status = 403
    code = "Forbidden"


class NotFoundError(NimbusError):
    status = 404
    code = "NotFound"


class ConflictError(NimbusError):
    status = 409
    code = "Conflict"


class TooLargeError(NimbusError):
    status = 413
    code = "TooLarge"


class ServiceUnavailableError(NimbusError):
    """The service is briefly unavailable or unreachable: safe to retry."""

    status = 503
    code = "Unavailable"


_BY_STATUS: dict[int, type[NimbusError]] = {
    400: InvalidError, 401: AuthenticationError, 403: ForbiddenError, 404: NotFoundError,
    409: ConflictError, 413: TooLargeError, 503: ServiceUnavailableError,
    # Throttling and gateway hiccups mean the same thing to a caller: wait and retry.
    429: ServiceUnavailableError, 502: ServiceUnavailableError, 504: ServiceUnavailableError,
}


def error_for_status(status: int, body: Any, fallback_message: str) -> NimbusError:
    """The typed error for an HTTP error response; `body` is the decoded JSON, if any."""
    body = body if isinstance(body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else fallback_message
    cls = _BY_STATUS.get(status, NimbusError)
    return cls(message, status=status, code=body.get("code") if isinstance(body.get("code"), str) else None,
               field=body.get("field") if isinstance(body.get("field"), str) else None,
               details=body.get("details") if isinstance(body.get("details"), dict) else None)
