"""Domain errors. Each carries its HTTP status; they become responses in one place (api/routing.py)."""
from __future__ import annotations


class NimbusError(Exception):
    status = 500
    code = "InternalError"

    def __init__(self, message: str, *, field: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class Invalid(NimbusError):
    status = 400
    code = "Invalid"


class Unauthorized(NimbusError):
    status = 401
    code = "Unauthorized"


class Forbidden(NimbusError):
    status = 403
    code = "Forbidden"


class NotFound(NimbusError):
    status = 404
    code = "NotFound"


class Conflict(NimbusError):
    status = 409
    code = "Conflict"


class TooLarge(NimbusError):
    status = 413
    code = "TooLarge"


class Unavailable(NimbusError):
    """A backend is throttling or briefly unreachable: safe to retry."""

    status = 503
    code = "Unavailable"
