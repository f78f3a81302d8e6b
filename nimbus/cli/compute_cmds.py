"""`nimbus compute ...`: a workspace's compute targets; `nimbus agent`: run an instance target's runs here."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import click
import yaml

from nimbus.cli.common import CommandError, connect, key_values, output_option, workspace_option
from nimbus.cli.output import emit
from nimbus.compute_target import CREATE_TIMEOUT_S, POLL_SECONDS, ComputeTarget
from nimbus.runtime.agent import Agent, AgentSettings

COLUMNS = [("NAME", "name"), ("TYPE", "type"), ("STATE", "state"), ("SETTINGS", "settings")]
FIELDS = ["name", "type", "state", "active_runs", "settings", "resources", "error", "created", "created_by"]


@click.group()
def compute() -> None:
    """Compute targets: where submitted runs execute (local, batch, instance)."""


def waiting(until: str):
    """--wait/--no-wait, --timeout-seconds and --poll-seconds: a batch cluster takes minutes to come and go."""
    def add(command):
        for option in reversed([
            click.option("--wait/--no-wait", default=True, show_default=True,
                         help=f"Wait until a batch cluster is {until}."),
            click.option("--timeout-seconds", type=click.FloatRange(1, 24 * 3600), default=CREATE_TIMEOUT_S,
                         show_default=True, help="How long to wait for the cluster."),
            click.option("--poll-seconds", type=click.FloatRange(0.01, 600), default=POLL_SECONDS, show_default=True,
                         help="How often to look while waiting."),
        ]):
            command = option(command)
        return command
    return add


@compute.command("create")
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(["batch", "instance"]), required=True,
              help="batch: an AWS Batch cluster; instance: a machine running `nimbus agent`.")
@click.option("--setting", "pairs", multiple=True, metavar="KEY=VALUE",
              help="One setting (repeatable); VALUE is read as JSON when it parses (16, [\"a\", \"b\"]), "
                   "else taken as text. These win over --settings-file.")
@click.option("--settings-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A JSON or YAML file holding the settings object.")
@waiting("ready (or has failed); --no-wait answers while it is Creating")
@workspace_option
@output_option
def create(name: str, kind: str, pairs: tuple[str, ...], settings_file: Path | None, wait: bool,
           timeout_seconds: float, poll_seconds: float, workspace_name: str | None, output: str) -> None:
    """Create compute target NAME. A batch cluster takes minutes to make: this waits until it is
    Succeeded (failure: its reason, exit status 1), unless --no-wait."""
    settings = {**_settings_file(settings_file), **_pairs(pairs)}
    target = ComputeTarget.create(connect(workspace_name), name, kind, settings, wait=False)
    if wait and target.details["state"] == "Creating":
        click.echo(f"compute target {name!r} is being created; waiting (up to {timeout_seconds:g} s)", err=True)
        target.wait_for_completion(timeout_s=timeout_seconds, poll_seconds=poll_seconds)
    emit(output, target.details, keys=[f for f in FIELDS if f != "active_runs"])


@compute.command("list")
@workspace_option
@output_option
def list_targets(workspace_name: str | None, output: str) -> None:
    """The workspace's compute targets, local first."""
    emit(output, [t.details for t in ComputeTarget.list(connect(workspace_name))], COLUMNS)


@compute.command("show")
@click.argument("name")
@workspace_option
@output_option
def show(name: str, workspace_name: str | None, output: str) -> None:
    """A compute target, with how many of its runs have not ended."""
    emit(output, ComputeTarget(connect(workspace_name), name).refresh(), keys=FIELDS)


@compute.command("delete")
@click.argument("name")
@waiting("taken down; --no-wait answers while it is Deleting")
@workspace_option
@output_option
def delete(name: str, wait: bool, timeout_seconds: float, poll_seconds: float, workspace_name: str | None,
           output: str) -> None:
    """Delete compute target NAME (refused while runs on it have not ended)."""
    deleted = ComputeTarget(connect(workspace_name), name).delete(wait=wait, timeout_s=timeout_seconds,
                                                                  poll_seconds=poll_seconds)
    emit(output, {"name": name, "deleted": deleted} if deleted else {"name": name, "deleted": False,
                                                                     "state": "Deleting"})


@click.command("agent")
@click.option("--compute", "compute_name", required=True, metavar="NAME", help="The instance target to serve.")
@click.option("--once", is_flag=True, help="Run what is queued now, then exit once those runs have ended.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=None,
              help="Runs at once (default: the target's max_concurrent_runs, which the service enforces across agents).")
@click.option("--poll-seconds", type=click.FloatRange(0.05, 3600), default=5.0, show_default=True,
              help="How often an idle agent asks for queued runs.")
@click.option("--grace-seconds", type=click.FloatRange(0, 86400), default=60.0, show_default=True,
              help="After SIGTERM, how long running jobs may take before they are killed.")
@click.option("--jobs-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where each run gets its folder (default: $NIMBUS_HOME/agent/<workspace>/<compute>/jobs).")
@workspace_option
def agent(compute_name: str, once: bool, concurrency: int | None, poll_seconds: float, grace_seconds: float,
          jobs_dir: Path | None, workspace_name: str | None) -> None:
    """Run the queued runs of an instance compute target on this machine.

    SIGTERM or Ctrl-C stops claiming; running jobs may finish within --grace-seconds.
    """
    settings = AgentSettings(compute_name, concurrency=concurrency, poll_seconds=poll_seconds, grace_s=grace_seconds,
                             jobs_dir=jobs_dir)
    worker = Agent(connect(workspace_name), settings)
    previous = {sig: signal.signal(sig, lambda *_: worker.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        claimed = worker.run(once=once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"agent stopped after {claimed} run(s)", err=True)


def _pairs(pairs: tuple[str, ...]) -> dict:
    """--setting values are JSON when they parse as JSON (numbers, lists), else text."""
    settings = {}
    for key, text in key_values(pairs, "--setting").items():
        try:
            settings[key] = json.loads(text)
        except ValueError:
            settings[key] = text
    return settings


def _settings_file(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML reads JSON too
    except yaml.YAMLError as err:
        raise CommandError(f"{path} is neither JSON nor YAML: {err}") from None
    if not isinstance(data, dict):
        raise CommandError(f"{path} must hold an object of settings")
    return data
