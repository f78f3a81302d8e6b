"""A scoring request as a Lambda invocation: the API Gateway HTTP API event the API sends the endpoint's
alias, and the handler's answer (or the function's failure) read back as a ScoreResult."""
from __future__ import annotations

import base64
import json

from chalicelib.hosting.port import ScoreResult


def score_event(body: bytes, content_type: str, request_id: str, time_epoch_ms: int) -> dict:
    """An API Gateway HTTP API (payload 2.0) event for POST /score, as the handler would get it."""
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    return {
        "version": "2.0",
        "routeKey": "POST /score",
        "rawPath": "/score",
        "rawQueryString": "",
        "headers": {"content-type": content_type, "content-length": str(len(body))},
        "requestContext": {
            "http": {"method": "POST", "path": "/score", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "nimbus-api"},
            "requestId": request_id,
            "routeKey": "POST /score",
            "stage": "$default",
            "timeEpoch": time_epoch_ms,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def deployment_of(executed_version: str | None, details: dict[str, dict]) -> str | None:
    """The deployment whose published version answered (Lambda names it in ExecutedVersion)."""
    for deployment, host in details.items():
        if executed_version and (host or {}).get("function_version") == executed_version:
            return deployment
    return None


def parse_response(function_error: str | None, raw: bytes, deployment: str | None) -> ScoreResult:
    """The handler answers an API Gateway v2 response dict; anything else is the function failing."""
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    if function_error:
        detail = answer if isinstance(answer, dict) else {}
        message = f"{detail.get('errorType', function_error)}: {detail.get('errorMessage', '')}".rstrip(": ")
        return error_result(502, deployment, "ScoringFunctionError", f"the scoring function failed: {message}")
    if not isinstance(answer, dict) or not isinstance(answer.get("statusCode"), int):
        return error_result(502, deployment, "ScoringFunctionError", "the scoring function returned no HTTP response")
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    body = answer.get("body") or ""
    data = base64.b64decode(body) if answer.get("isBase64Encoded") else body.encode("utf-8")
    return ScoreResult(status=answer["statusCode"], body=data,
                       deployment=deployment or headers.get("x-nimbus-deployment"),
                       content_type=headers.get("content-type", "application/json"))


def error_result(status: int, deployment: str | None, code: str, message: str, field: str | None = None) -> ScoreResult:
    body = {"code": code, "message": message, **({"field": field} if field else {})}
    return ScoreResult(status=status, body=json.dumps(body).encode("utf-8"), deployment=deployment)
