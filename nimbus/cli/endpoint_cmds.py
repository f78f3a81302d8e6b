"""`nimbus deploy` and `nimbus endpoint ...`: deploy models, score, and run endpoints (keys, traffic, logs)."""
from __future__ import annotations

from pathlib import Path

import click

from nimbus.cli.common import connect, output_option, workspace_option
from nimbus.cli.output import emit, print_json, print_record, print_table
from nimbus.deployment_config import DeploymentConfig, InferenceConfig
from nimbus.webservice import DEPLOY_TIMEOUT_S, POLL_SECONDS, ROLLING_OUT, Webservice, deploy as deploy_models

DEPLOY_FIELDS = ["endpoint", "name", "state", "step", "revision", "models", "entry_script", "environment",
                 "host_url", "scoring_uri", "error"]
ENDPOINT_FIELDS = ["name", "state", "scoring_uri", "traffic", "created", "created_by"]
LIST_COLUMNS = [("NAME", "name"), ("STATE", "state"), ("DEPLOYMENTS", "deployment_names"), ("TRAFFIC", "traffic"),
                ("CREATED", "created")]
SHOW_COLUMNS = [("DEPLOYMENT", "name"), ("STATE", "state"), ("WEIGHT", "weight"), ("MODELS", "models"),
                ("REQUESTS", "requests"), ("ERRORS", "errors"), ("P50 MS", "p50_ms"), ("P95 MS", "p95_ms")]
TELEMETRY_KEYS = ("requests", "errors", "p50_ms", "p95_ms")


@click.command("deploy")
@click.argument("name")
@click.option("--model", "models", multiple=True, required=True, metavar="NAME:VERSION",
              help="A registered model version (or NAME:ALIAS) to deploy (repeatable).")
@click.option("--entry-script", required=True, help="The script with init() and run(raw_data).")
@click.option("--source-dir", type=click.Path(file_okay=False), default=None,
              help="Folder to deploy; --entry-script is relative to it (default: the script's folder).")
@click.option("--endpoint", default=None, help="The endpoint to deploy into (default: NAME); made if missing.")
@click.option("--environment", default=None, help="The environment to score in (default: the platform's).")
@click.option("--memory-mb", type=int, default=1024, show_default=True)
@click.option("--timeout-s", type=int, default=60, show_default=True, help="Time limit per request.")
@click.option("--reserved-concurrency", type=int, default=None)
@click.option("--provisioned-concurrency", type=int, default=None)
@click.option("--min-instances", type=int, default=0, show_default=True,
              help="Instances kept warm (AWS: provisioned concurrency); 0 scales to zero.")
@click.option("--max-instances", type=int, default=None,
              help="Most instances at once (AWS: reserved concurrency); default: no cap.")
@click.option("--capture-rate", type=float, default=0.0, show_default=True,
              help="Share of requests (0-1) whose body and answer are kept.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the deployment is Succeeded (or has failed); --no-wait answers while it is "
                   "Creating or Updating.")
@click.option("--timeout-seconds", type=click.FloatRange(1, 24 * 3600), default=DEPLOY_TIMEOUT_S, show_default=True,
              help="How long to wait for the deployment.")
@click.option("--poll-seconds", type=click.FloatRange(0.01, 600), default=POLL_SECONDS, show_default=True,
              help="How often to look while waiting.")
@workspace_option
@output_option
def deploy(name: str, models: tuple[str, ...], entry_script: str, source_dir: str | None, endpoint: str | None,
           environment: str | None, memory_mb: int, timeout_s: int, reserved_concurrency: int | None,
           provisioned_concurrency: int | None, min_instances: int, max_instances: int | None, capture_rate: float,
           wait: bool, timeout_seconds: float, poll_seconds: float, workspace_name: str | None, output: str) -> None:
    """Deploy model versions as deployment NAME of an endpoint. Rolling it out may take a while: this waits
    until it is Succeeded (failure: its reason, exit status 1), unless --no-wait."""
    inference = InferenceConfig(entry_script, source_directory=source_dir, environment=environment)
    config = DeploymentConfig(memory_mb=memory_mb, timeout_s=timeout_s, reserved_concurrency=reserved_concurrency,
                              provisioned_concurrency=provisioned_concurrency, min_instances=min_instances,
                              max_instances=max_instances, capture_rate=capture_rate)
    service = deploy_models(connect(workspace_name), name, list(models), inference, config, endpoint=endpoint,
                            show_progress=None, wait=False)
    state = (service.deployment_details or {}).get("state")
    if wait and state in ROLLING_OUT:
        click.echo(f"deployment {name!r} of endpoint {service.name!r} is {state}; waiting (up to "
                   f"{timeout_seconds:g} s)", err=True)
        service.wait_for_deployment(timeout_s=timeout_seconds, poll_seconds=poll_seconds)
    view = {"endpoint": service.name, **(service.deployment_details or {}), "scoring_uri": service.scoring_uri}
    host_url = (view.get("host") or {}).get("host_url")
    if output == "json":
        emit(output, view)
    else:
        shown = [k for k in DEPLOY_FIELDS if (k != "host_url" or host_url) and (k != "step" or "step" in view)]
        emit(output, {**view, "host_url": host_url}, keys=shown)


@click.group()
def endpoint() -> None:
    """Endpoints: scoring URIs with keys and a traffic split over deployments."""


@endpoint.command("list")
@workspace_option
@output_option
def list_endpoints(workspace_name: str | None, output: str) -> None:
    """The workspace's endpoints."""
    services = Webservice.list(connect(workspace_name))
    if output == "json":
        print_json([service.details for service in services])
        return
    rows = [{**service.details, "state": service.state,
             "deployment_names": [view.get("name") for view in service.deployments]} for service in services]
    emit(output, rows, LIST_COLUMNS)


@endpoint.command("show")
@click.argument("name")
@click.option("--minutes", type=click.IntRange(min=1), default=60, show_default=True,
              help="Telemetry over this many minutes.")
@workspace_option
@output_option
def show_endpoint(name: str, minutes: int, workspace_name: str | None, output: str) -> None:
    """An endpoint, its deployments and their telemetry (requests, errors, p50/p95 latency)."""
    service = Webservice(connect(workspace_name), name)
    details, telemetry = service.get_details(), service.telemetry(minutes)
    if output == "json":
        print_json({**details, "state": service.state, "scoring_uri": service.scoring_uri, "telemetry": telemetry})
        return
    print_record({**details, "state": service.state, "scoring_uri": service.scoring_uri}, ENDPOINT_FIELDS)
    per_deployment = telemetry.get("deployments") or {}
    traffic = service.traffic
    rows = [{**view, "weight": traffic.get(view.get("name"), 0),
             **{k: (per_deployment.get(view.get("name")) or {}).get(k) for k in TELEMETRY_KEYS}}
            for view in service.deployments]
    rows.append({"name": "(all)", **{k: telemetry.get(k) for k in TELEMETRY_KEYS}})
    click.echo(f"\ntelemetry over the last {telemetry.get('window_minutes', minutes)} minutes:")
    print_table(rows, SHOW_COLUMNS)


@endpoint.command("invoke")
@click.argument("name")
@click.option("--data", required=True, metavar="JSON|@FILE", help="The request body, or @FILE to send a file's bytes.")
@workspace_option
@output_option
def invoke_endpoint(name: str, data: str, workspace_name: str | None, output: str) -> None:
    """Score a request with the endpoint's key and print the answer (always JSON)."""
    body: str | bytes = Path(data[1:]).read_bytes() if data.startswith("@") else data
    print_json(Webservice(connect(workspace_name), name).run(body))


@endpoint.command("keys")
@click.argument("name")
@click.option("--regenerate", type=click.Choice(["primary", "secondary"], case_sensitive=False), default=None,
              help="Replace this key first; the old one stops working at once.")
@workspace_option
@output_option
def endpoint_keys(name: str, regenerate: str | None, workspace_name: str | None, output: str) -> None:
    """Print the endpoint's two keys."""
    service = Webservice(connect(workspace_name), name)
    primary, secondary = service.regen_key(regenerate) if regenerate else service.get_keys()
    emit(output, {"primary_key": primary, "secondary_key": secondary})


@endpoint.command("traffic")
@click.argument("name")
@click.argument("weights", nargs=-1, metavar="[DEPLOYMENT=WEIGHT]...")
@workspace_option
@output_option
def endpoint_traffic(name: str, weights: tuple[str, ...], workspace_name: str | None, output: str) -> None:
    """Split the endpoint's requests by weight (summing to 100); with no weights, show the split."""
    service = Webservice(connect(workspace_name), name)
    traffic = service.set_traffic(_weights(weights)) if weights else service.traffic
    if output == "json":
        print_json(traffic)
    else:
        emit(output, [{"deployment": d, "weight": w} for d, w in sorted(traffic.items())],
             [("DEPLOYMENT", "deployment"), ("WEIGHT", "weight")])


def _weights(pairs: tuple[str, ...]) -> dict[str, int]:
    weights = {}
    for pair in pairs:
        deployment, sep, weight = pair.partition("=")
        if not sep or not deployment or not weight.strip().isdigit():
            raise click.BadParameter(f"{pair!r} is not DEPLOYMENT=WEIGHT (a whole number)", param_hint="WEIGHTS")
        weights[deployment] = int(weight)
    return weights


@endpoint.command("logs")
@click.argument("name")
@click.option("--deployment", default=None, help="Whose logs (default: the deployment taking the most traffic).")
@click.option("--tail", type=click.IntRange(min=1), default=200, show_default=True, help="How many lines.")
@workspace_option
@output_option
def endpoint_logs(name: str, deployment: str | None, tail: int, workspace_name: str | None, output: str) -> None:
    """The last lines a deployment's scoring function printed."""
    text = Webservice(connect(workspace_name), name).get_logs(deployment, tail)
    if output == "json":
        print_json({"logs": text})
    elif text:
        click.echo(text.rstrip("\n"))


@endpoint.command("delete")
@click.argument("name")
@click.option("--deployment", default=None, help="Delete only this deployment.")
@workspace_option
@output_option
def delete_endpoint(name: str, deployment: str | None, workspace_name: str | None, output: str) -> None:
    """Delete an endpoint with all its deployments, or one deployment."""
    service = Webservice(connect(workspace_name), name)
    emit(output, service.delete_deployment(deployment) if deployment else service.delete())
