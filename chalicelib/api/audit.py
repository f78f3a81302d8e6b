"""A workspace's audit log: GET /v1/workspaces/{workspace}/audit (owners and admins; read-only)."""
from __future__ import annotations

from chalice import Blueprint

from chalicelib.api import responses as answer
from chalicelib.api.service_locator import services
from chalicelib.api.routing import PAGE_TOKEN, QueryParam, api_route, max_results, query_int, query_str

bp = Blueprint(__name__)


@api_route(bp, "/v1/workspaces/{workspace}/audit", role="owner", admins=True, response=answer.AuditLog,
           query=(QueryParam("action", str, "only the entries of this action"), max_results(100, 1000), PAGE_TOKEN))
def audit_log(principal, request, workspace):
    """Newest first, paged (`max_results`, `page_token`), optionally one `action`. No route changes it."""
    return services().audit.list(workspace, max_results=query_int(request, "max_results", 100, 1, 1000),
                                 page_token=query_str(request, "page_token"), action=query_str(request, "action"))
