"""Experiments and the search over their runs: /v1/workspaces/{workspace}/experiments[/{experiment}[/runs]]."""
import re

from chalice import Blueprint

from chalicelib.api.service_locator import services
from chalicelib.api import responses as answer
from chalicelib.api.routing import (
    PAGE_TOKEN, QueryParam, api_route, max_results, query_bool, query_int, query_list, query_str,
)
from chalicelib.errors import Invalid

bp = Blueprint(__name__)
_METRIC_FILTER = re.compile(r"(.+?)\s*(>=|<=|!=|>|<|=)\s*(\S+)")
SEARCH_QUERY = (
    QueryParam("status", list, "only runs in these statuses"),
    QueryParam("tag", list, "k (has the tag) or k=v; repeat to require several"),
    QueryParam("metric", list, "a filter on a metric's latest value, e.g. acc>0.5 (ops: > >= < <= = !=)"),
    QueryParam("top_level", bool, "leave child runs out"),
    QueryParam("order_by", str, "created, started, ended, duration_s, status or metrics.<name>, then asc or desc",
               "created desc"),
    max_results(100, 1000),
    PAGE_TOKEN,
)


@api_route(bp, "/v1/workspaces/{workspace}/experiments", role="reader",
           response=answer.ExperimentPage, query=(max_results(100, 1000), PAGE_TOKEN))
def list_experiments(principal, request, workspace):
    return services().experiments.list(workspace, query_int(request, "max_results", 100, 1, 1000),
                                       query_str(request, "page_token"))


@api_route(bp, "/v1/workspaces/{workspace}/experiments/{experiment}", role="reader", response=answer.Experiment)
def show_experiment(principal, request, workspace, experiment):
    return services().experiments.get(workspace, experiment)


@api_route(bp, "/v1/workspaces/{workspace}/experiments/{experiment}/runs", role="reader",
           response=answer.RunSearchPage, query=SEARCH_QUERY)
def search_runs(principal, request, workspace, experiment):
    """?status=S&tag=k[=v]&metric=name>0.5&top_level=true&order_by=metrics.acc desc&max_results=100&page_token=…"""
    tags = [(t.partition("=")[0], t.partition("=")[2] if "=" in t else None) for t in query_list(request, "tag")]
    metrics = []
    for text in query_list(request, "metric"):
        match = _METRIC_FILTER.fullmatch(text.strip())
        if not match:
            raise Invalid(f"metric filter {text!r} must look like name>0.5 (ops: > >= < <= = !=)", field="metric")
        try:
            threshold = float(match[3])
        except ValueError:
            raise Invalid(f"metric filter {text!r}: {match[3]!r} is not a number", field="metric") from None
        metrics.append((match[1], match[2], threshold))
    field, _, direction = (query_str(request, "order_by") or "created desc").strip().partition(" ")
    if direction.strip().lower() not in ("", "asc", "desc"):
        raise Invalid("order_by direction must be asc or desc", field="order_by")
    return services().runs.search(
        workspace, experiment, statuses=query_list(request, "status"), tags=tags, metrics=metrics,
        top_level=query_bool(request, "top_level"), order_by=field,
        descending=direction.strip().lower() != "asc", max_results=query_int(request, "max_results", 100, 1, 1000),
        page_token=query_str(request, "page_token"))
