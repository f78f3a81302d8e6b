"""Operator views: /v1/admin/stats (admins only)."""
from chalice import Blueprint

from chalicelib.api.service_locator import services
from chalicelib.api import responses as answer
from chalicelib.api.routing import api_route
from chalicelib.errors import Forbidden

bp = Blueprint(__name__)


@api_route(bp, "/v1/admin/stats", response=answer.Stats)
def stats(principal, request):
    """Counters of this process (one function instance in AWS, the whole platform locally)."""
    if not principal.is_admin:
        raise Forbidden("only an admin can read the platform's counters")
    ctx = services().ctx
    return {"backend": ctx.settings.backend, "table_writes": ctx.table.writes}
