"""Domain errors. Each has a code of nimbus/error_codes.py, which gives the HTTP status of its answer;
they become responses in one place (api/routing.py)."""
from __future__ import annotations

from nimbus import error_codes as codes
from nimbus.error_codes import ErrorCode


class NimbusError(Exception):
    """An error answered with a code of the table: a subclass names its own
    (`class Invalid(NimbusError, code=codes.INVALID)`), an instance may carry any other
    (`NimbusError(message, code=codes.SCORING_TIMEOUT)`). Without one it is an InternalError."""

    code = codes.INTERNAL_ERROR.code
    status = codes.INTERNAL_ERROR.status

    def __init_subclass__(cls, code: ErrorCode | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code, cls.status = code.code, code.status

    def __init__(self, message: str, *, code: ErrorCode | None = None, field: str | None = None,
                 details: dict | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code, self.status = code.code, code.status
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class Invalid(NimbusError, code=codes.INVALID):
    pass


class Unauthorized(NimbusError, code=codes.UNAUTHORIZED):
    pass


class Forbidden(NimbusError, code=codes.FORBIDDEN):
    pass


class NotFound(NimbusError, code=codes.NOT_FOUND):
    pass


class MethodNotAllowed(NimbusError, code=codes.METHOD_NOT_ALLOWED):
    pass


class LengthRequired(NimbusError, code=codes.LENGTH_REQUIRED):
    pass


class Conflict(NimbusError, code=codes.CONFLICT):
    pass


class TooLarge(NimbusError, code=codes.TOO_LARGE):
    pass


class Unavailable(NimbusError, code=codes.UNAVAILABLE):
    """A backend is throttling or briefly unreachable: safe to retry."""
