"""A workspace's audit log: GET /v1/workspaces/{workspace}/audit (owners and admins; read-only)."""
from __future__ import annotations

from typing import Any

from chalice import Blueprint
from pydantic import BaseModel

from chalicelib.api.service_locator import services
from chalicelib.api.routing import api_route, query_int, query_str

bp = Blueprint(__name__)


class AuditEntry(BaseModel):
    id: str  # sorts in time order
    at: str
    actor: str | None  # None: the platform itself
    actor_token_id: str | None
    actor_run_id: str | None  # set when a run's token made the change
    action: str
    target: str
    details: dict[str, Any]


class AuditLog(BaseModel):
    entries: list[AuditEntry]  # newest first
    next_page_token: str | None


@api_route(bp, "/v1/workspaces/{workspace}/audit", role="owner", admins=True, response=AuditLog)
def audit_log(principal, request, workspace):
    """Newest first, paged (`max_results`, `page_token`), optionally one `action`. No route changes it."""
    return services().audit.list(workspace, max_results=query_int(request, "max_results", 100, 1, 1000),
                                 page_token=query_str(request, "page_token"), action=query_str(request, "action"))
