"""The error codes the Nimbus API answers, each with its HTTP status: one table for the server and the SDK.

An error answer is JSON `{"code", "message", "field"?, "details"?}` sent with its code's status. The
server's errors (chalicelib/errors.py) take their code and status from here; the SDK
(nimbus/exceptions.py) raises the exception it keys by the code, and goes by the status only for an
answer without a code of this table (AWS in front of the API: API Gateway's throttling 429, a 502 or
504 from the gateway). docs/api.md lists the table.

Standard library only, and nothing else of nimbus: the API and the scoring runtime import it too.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str  # what an error answer's "code" says
    status: int  # the HTTP status it is sent with
    meaning: str


# --- the API's own errors (chalicelib/errors.py) -------------------------------------------------------
INVALID = ErrorCode("Invalid", 400, "the request, or a value in it, is invalid; `field` names which")
UNAUTHORIZED = ErrorCode("Unauthorized", 401, "no valid token (missing, unknown, revoked, expired, or a run "
                                              "token whose run has ended); for scoring, no valid endpoint key")
FORBIDDEN = ErrorCode("Forbidden", 403, "the caller's role, or its run token or scoped token, does not allow this")
NOT_FOUND = ErrorCode("NotFound", 404, "no such resource or route, or a workspace the caller is not a member of")
CONFLICT = ErrorCode("Conflict", 409, "the request conflicts with the current state: a name taken, a run "
                                      "that has ended, a write that lost a race")
TOO_LARGE = ErrorCode("TooLarge", 413, "the request body, or a value in it, is over its limit")
UNAVAILABLE = ErrorCode("Unavailable", 503, "a backend is throttling or briefly unreachable: safe to retry")
INTERNAL_ERROR = ErrorCode("InternalError", 500, "an unexpected failure; the service's log has the details")

# --- the HTTP layer: a route's method or content type, a local presigned URL's framing -----------------
METHOD_NOT_ALLOWED = ErrorCode("MethodNotAllowed", 405, "the route, or a local presigned URL, does not take "
                                                        "this HTTP method")
LENGTH_REQUIRED = ErrorCode("LengthRequired", 411, "a body sent without Content-Length (an upload to a local "
                                                   "presigned URL, a chunked request to a local scoring host)")
UNSUPPORTED_MEDIA_TYPE = ErrorCode("UnsupportedMediaType", 415, "the route does not take this Content-Type; "
                                                                "`field` is `Content-Type`")
BAD_REQUEST = ErrorCode("BadRequest", 400, "the local platform or a local scoring host could not frame the HTTP "
                                           "request itself: a malformed Content-Length, Transfer-Encoding or "
                                           "chunk (sent with 408 for headers that came too slowly, 414 or 431 for "
                                           "an over-long request line or headers, 501 for an unknown "
                                           "Transfer-Encoding)")

# --- scoring: what POST …/endpoints/{ep}/score passes on from the deployment that took the request -------
SCORING_ERROR = ErrorCode("ScoringError", 500, "the entry script's run() raised, or returned a value that is "
                                               "not JSON")
SCORING_TIMEOUT = ErrorCode("ScoringTimeout", 504, "run() did not return within the deployment's timeout_s")
SCORING_FUNCTION_ERROR = ErrorCode("ScoringFunctionError", 502, "the scoring function (Lambda) failed or sent "
                                                                "no HTTP response")
PAYLOAD_TOO_LARGE = ErrorCode("PayloadTooLarge", 413, "the scoring request is over the 6 MB limit")
DEPLOYMENT_FAILED = ErrorCode("DeploymentFailed", 503, "the deployment failed to load: its entry script's import "
                                                       "or init() raised")
NO_DEPLOYMENT = ErrorCode("NoDeployment", 503, "no deployment of the endpoint takes traffic")

ALL: tuple[ErrorCode, ...] = (
    INVALID, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, TOO_LARGE, UNAVAILABLE, INTERNAL_ERROR,
    METHOD_NOT_ALLOWED, LENGTH_REQUIRED, UNSUPPORTED_MEDIA_TYPE, BAD_REQUEST,
    SCORING_ERROR, SCORING_TIMEOUT, SCORING_FUNCTION_ERROR, PAYLOAD_TOO_LARGE, DEPLOYMENT_FAILED, NO_DEPLOYMENT,
)
BY_CODE: dict[str, ErrorCode] = {entry.code: entry for entry in ALL}

