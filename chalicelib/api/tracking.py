"""What a run records: metrics, logs, outputs and images, under /v1/workspaces/{workspace}/runs/{run_id}/."""
from chalice import Blueprint

from chalicelib.api.service_locator import services
from chalicelib.api.models import AppendLog, LogMetrics, UploadImage, UploadOutputs
from chalicelib.api import responses as answer
from chalicelib.api.routing import PAGE_TOKEN, QueryParam, api_route, max_results, query_int, query_str
from chalicelib.errors import Invalid
from chalicelib.services.logs import MAX_READ

bp = Blueprint(__name__)
RUN = "/v1/workspaces/{workspace}/runs/{run_id}"


@api_route(bp, RUN + "/metrics", ("POST",), body=LogMetrics, role="contributor", run_token=True,
           response=answer.MetricsLogged)
def log_metrics(principal, request, workspace, run_id, body):
    entries = [m.model_dump() for m in body.metrics]
    return services().metrics.log(workspace, run_id, entries, body.batch_id)


@api_route(bp, RUN + "/metrics", role="reader", run_token=True, response=answer.MetricList)
def list_metrics(principal, request, workspace, run_id):
    return {"metrics": services().metrics.summary(workspace, run_id)}


@api_route(bp, RUN + "/metric-history", role="reader", run_token=True,
           response=answer.MetricHistory,
           query=(QueryParam("name", str, "the metric", required=True), max_results(10_000, 100_000), PAGE_TOKEN))
def metric_history(principal, request, workspace, run_id):
    name = query_str(request, "name")
    if not name:
        raise Invalid("name is required", field="name")
    return services().metrics.history(workspace, run_id, name, query_int(request, "max_results", 10_000, 1, 100_000),
                                      query_str(request, "page_token"))


@api_route(bp, RUN + "/logs", role="reader", run_token=True, response=answer.LogStreamList)
def list_logs(principal, request, workspace, run_id):
    return {"streams": services().logs.streams(workspace, run_id)}


@api_route(bp, RUN + "/logs/{stream}", ("POST",), body=AppendLog, role="contributor", run_token=True,
           response=answer.LogAppended)
def append_log(principal, request, workspace, run_id, stream, body):
    return services().logs.append(workspace, run_id, stream, body.text)


@api_route(bp, RUN + "/logs/{stream}", role="reader", run_token=True,
           response=answer.LogText,
           query=(QueryParam("offset", int, "the character to read from", 0, 0, 2**53),
                  QueryParam("max_chars", int, "how many characters at most", MAX_READ, 1, MAX_READ)))
def read_log(principal, request, workspace, run_id, stream):
    return services().logs.read(workspace, run_id, stream, query_int(request, "offset", 0, 0, 2**53),
                                query_int(request, "max_chars", MAX_READ, 1, MAX_READ))


@api_route(bp, RUN + "/outputs/uploads", ("POST",), body=UploadOutputs, role="contributor", run_token=True,
           response=answer.PathUrlList)
def upload_outputs(principal, request, workspace, run_id, body):
    return {"uploads": services().outputs.upload_urls(workspace, run_id, body.paths)}


@api_route(bp, RUN + "/outputs", role="reader", run_token=True,
           response=answer.OutputPage,
           query=(QueryParam("prefix", str, "only the files under this path"), max_results(1000, 1000), PAGE_TOKEN))
def list_outputs(principal, request, workspace, run_id):
    return services().outputs.list(workspace, run_id, query_str(request, "prefix") or "",
                                   query_int(request, "max_results", 1000, 1, 1000), query_str(request, "page_token"))


@api_route(bp, RUN + "/outputs/download", role="reader", run_token=True,
           response=answer.OutputDownload,
           query=(QueryParam("path", str, "the output file", required=True),))
def download_output(principal, request, workspace, run_id):
    return services().outputs.download_url(workspace, run_id, query_str(request, "path") or "")


@api_route(bp, RUN + "/images", ("POST",), body=UploadImage, role="contributor", run_token=True, response=answer.PathUrl)
def upload_image(principal, request, workspace, run_id, body):
    return services().outputs.image_upload(workspace, run_id, body.name, body.extension)


@api_route(bp, RUN + "/images", role="reader", run_token=True,
           response=answer.PathUrl, query=(QueryParam("path", str, "the image's path", required=True),))
def image_url(principal, request, workspace, run_id):
    return services().outputs.image_url(workspace, run_id, query_str(request, "path") or "")
