"""`nimbus run ...`: submit runs, find them, read their metrics and logs, download their outputs, cancel them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from nimbus.cli.common import EXIT_NOT_SUCCEEDED, connect, find_run, key_values, output_option, workspace_option
from nimbus.cli.output import cell_text, emit
from nimbus.experiment import Experiment
from nimbus.progress import wanted
from nimbus.runconfig import ScriptRunConfig
from nimbus.run_logs import follow_logs

RUN_COLUMNS = [("ID", "id"), ("NAME", "display_name"), ("STATUS", "status"), ("CREATED", "created"),
               ("DURATION (S)", "duration_s"), ("PARENT", "parent_id"), ("METRICS", "metrics")]
RUN_FIELDS = ["id", "display_name", "experiment", "status", "created", "started", "ended", "duration_s",
              "submitted_by", "parent_id", "root_id", "depth", "tags", "properties", "metrics", "children", "error"]
SUBMIT_FIELDS = ["id", "experiment", "status", "created", "snapshot_id", "tags"]


@click.group()
def run() -> None:
    """Runs: one execution of an experiment."""


@run.command("list")
@click.option("-e", "--experiment", "experiment_name", required=True, help="The experiment whose runs to list.")
@click.option("--status", multiple=True, help="Only runs in this status (repeatable).")
@click.option("--tag", multiple=True, metavar="KEY[=VALUE]", help="Only runs with this tag (repeatable).")
@click.option("--metric", multiple=True, metavar="FILTER", help="e.g. 'acc>0.5' on the latest value (repeatable).")
@click.option("--order-by", metavar="FIELD [asc|desc]", help="e.g. 'metrics.acc desc' (default: created desc).")
@click.option("--max-results", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--include-children", is_flag=True, help="Also list child runs.")
@workspace_option
@output_option
def list_runs(experiment_name: str, status: tuple[str, ...], tag: tuple[str, ...], metric: tuple[str, ...],
              order_by: str | None, max_results: int, include_children: bool, workspace_name: str | None,
              output: str) -> None:
    """Runs of an experiment, filtered and ordered."""
    runs = Experiment(connect(workspace_name), experiment_name).get_runs(
        status=list(status), tags=list(tag), metric_filters=list(metric), order_by=order_by, max_results=max_results,
        include_children=include_children)
    columns = RUN_COLUMNS if include_children else [c for c in RUN_COLUMNS if c[1] != "parent_id"]
    emit(output, [r.details for r in runs], columns)


@run.command("submit", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--source-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder to snapshot; SCRIPT is relative to it (default: the run configuration's, else .).")
@click.option("--run-config", "run_config_file", type=click.Path(dir_okay=False, exists=True),
              help="A .runconfig.yml file to start from; the other options override it.")
@click.option("-e", "--experiment", "experiment_name", required=True, help="The experiment the run joins.")
@click.option("--compute", default=None, metavar="TARGET",
              help="The compute target to run on: local (the default) or one registered in the workspace.")
@click.option("--environment", default=None, metavar="NAME[:VERSION]",
              help="A registered environment to run in (default: the runner's own interpreter).")
@click.option("--tag", multiple=True, metavar="KEY=VALUE", help="A tag for the run (repeatable).")
@click.option("--secret-var", "secret_vars", multiple=True, metavar="VARIABLE=SECRET",
              help="Set VARIABLE from the workspace's secret SECRET when the run starts, masked in its logs "
                   "(repeatable; see `nimbus secret set`).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=DATASET[:VERSION]",
              help="A registered dataset the runner downloads before the script starts; the script finds it in "
                   "Run.get_context().input_datasets[NAME], and '${{inputs.NAME}}' in ARGS becomes its folder "
                   "(repeatable).")
@click.option("--wait", is_flag=True, help="Print the run's output until it ends; exit 0 only if it Completed.")
@workspace_option
@output_option
def submit(script: str | None, args: tuple[str, ...], source_dir: str | None, run_config_file: str | None,
           experiment_name: str, compute: str | None, environment: str | None, tag: tuple[str, ...],
           secret_vars: tuple[str, ...], inputs: tuple[str, ...], wait: bool, workspace_name: str | None,
           output: str) -> None:
    """Snapshot a folder and run SCRIPT [ARGS]... from it.

    Options go before SCRIPT: everything after it is passed to the script as it is.
    """
    config = _submit_config(script, args, source_dir, run_config_file, compute, environment)
    if secret_vars:
        config.secret_variables = {**config.secret_variables, **key_values(secret_vars, "--secret-var")}
    for name, reference in key_values(inputs, "--input").items():
        dataset, _, version = reference.partition(":")
        config.inputs = [*config.inputs, {"name": name, "dataset": dataset, "version": version or "latest",
                                          "mode": "download"}]
    if secret_vars or inputs:
        config.validate()
    submitted = Experiment(connect(workspace_name), experiment_name).submit(config, tags=key_values(tag, "--tag"))
    report_submitted(submitted, wait, output)


def report_submitted(submitted, wait: bool, output: str) -> None:
    """Print a submitted run; with `wait`, follow its logs, end with its status and duration, and exit
    EXIT_NOT_SUCCEEDED unless it Completed."""
    if not wait:
        emit(output, submitted.details, keys=SUBMIT_FIELDS)
        return
    if output == "json":  # stdout keeps one JSON document: the log goes to stderr
        write = lambda text: (sys.stderr.write(text), sys.stderr.flush())  # noqa: E731
    else:
        emit(output, submitted.details, keys=SUBMIT_FIELDS)
        write = lambda text: (sys.stdout.write(text), sys.stdout.flush())  # noqa: E731
    status = follow_logs(submitted, write=write)
    details = submitted.get_details()
    if output == "json":
        emit(output, details)
    _report_end(submitted.id, status, details, to_stderr=output == "json" or status != "Completed")


def _report_end(run_id: str, status: str, details: dict, to_stderr: bool) -> None:
    """The last line of a followed run: its final status and duration; exits EXIT_NOT_SUCCEEDED unless it
    Completed."""
    duration = details.get("duration_s")
    line = f"run {run_id} {status}" + (f" after {duration:.1f} s" if isinstance(duration, (int, float)) else "")
    error = (details.get("error") or {}).get("message")
    click.echo(line + (f": {cell_text(error)}" if error and status != "Completed" else ""), err=to_stderr)
    if status != "Completed":
        sys.exit(EXIT_NOT_SUCCEEDED)


def _submit_config(script: str | None, args: tuple[str, ...], source_dir: str | None, run_config_file: str | None,
                   compute: str | None, environment: str | None = None) -> ScriptRunConfig:
    """The run configuration file's settings, if any, with the command line's on top."""
    if run_config_file is None and script is None:
        raise click.UsageError("give SCRIPT, or --run-config with a script or command in it")
    config = ScriptRunConfig.load(run_config_file) if run_config_file else ScriptRunConfig(script=script)
    if script is not None:  # a new script brings its own arguments
        config.script, config.command, config.arguments = script, None, list(args)
    if source_dir is not None:
        config.source_directory = source_dir
    if compute is not None:
        config.compute_target = compute
    if environment is not None:
        config.environment = environment
    config.validate()
    return config


@run.command("show")
@click.argument("run_id", metavar="RUN")
@workspace_option
@output_option
def show_run(run_id: str, workspace_name: str | None, output: str) -> None:
    """Everything about one run."""
    emit(output, find_run(workspace_name, run_id).get_details(), keys=RUN_FIELDS)


@run.command("metrics")
@click.argument("run_id", metavar="RUN")
@click.option("--name", help="Only this metric.")
@workspace_option
@output_option
def run_metrics(run_id: str, name: str | None, workspace_name: str | None, output: str) -> None:
    """A run's metrics: one value, or every logged value when there are several."""
    metrics = find_run(workspace_name, run_id).get_metrics(name)
    rows = [{"name": n, "count": len(v) if isinstance(v, list) else 1,
             "last": v[-1] if isinstance(v, list) and v else v} for n, v in metrics.items()]
    emit(output, metrics if output == "json" else rows, [("NAME", "name"), ("VALUES", "count"), ("LAST", "last")])


@run.command("logs")
@click.argument("run_id", metavar="RUN")
@click.option("--stream", default="stdout", show_default=True, help="Which log stream.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends; exit 0 only if it Completed.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between polls while following.")
@workspace_option
@output_option
def run_logs(run_id: str, stream: str, follow: bool, interval: float, workspace_name: str | None, output: str) -> None:
    """Print a run's log (json: one object; with --follow, one JSON line per piece, then the status)."""
    target = find_run(workspace_name, run_id)
    if output == "json":
        write = lambda text: click.echo(json.dumps({"text": text}))  # noqa: E731
    else:
        write = lambda text: (sys.stdout.write(text), sys.stdout.flush())  # noqa: E731
    if not follow:
        text, next_offset = _read_log(target, stream)
        if output == "json":
            click.echo(json.dumps({"run": target.id, "stream": stream, "text": text, "next_offset": next_offset}))
        else:
            write(text)
        return
    status = follow_logs(target, stream=stream, write=write, poll_seconds=interval)
    if output == "json":
        click.echo(json.dumps({"run": target.id, "stream": stream, "status": status}))
    if status != "Completed":
        _report_end(target.id, status, target.get_details(), to_stderr=True)


def _read_log(target, stream: str) -> tuple[str, int]:
    parts, offset = [], 0
    while True:
        reply = target.get_logs(stream, offset)
        if not reply["text"]:
            return "".join(parts), offset
        parts.append(reply["text"])
        offset = reply["next_offset"]


@run.command("download")
@click.argument("run_id", metavar="RUN")
@click.option("--prefix", default="", help="Only outputs under this path.")
@click.option("-d", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the files.")
@click.option("--zip", "as_zip", is_flag=True, help="Write one <run id>.zip instead of separate files.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@workspace_option
@output_option
def download(run_id: str, prefix: str, output_dir: Path, as_zip: bool, progress: bool | None,
             workspace_name: str | None, output: str) -> None:
    """Download a run's output files."""
    target = find_run(workspace_name, run_id)
    written = target.download_files(prefix, output_dir, as_zip=as_zip, show_progress=wanted(progress))
    _report_written(output, written, output_dir)


@run.command("snapshot")
@click.argument("run_id", metavar="RUN")
@click.option("-d", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the files.")
@click.option("--zip", "as_zip", is_flag=True, help="Write one <run id>-snapshot.zip instead of separate files.")
@workspace_option
@output_option
def snapshot(run_id: str, output_dir: Path, as_zip: bool, workspace_name: str | None, output: str) -> None:
    """Download the code a submitted run executed (its snapshot)."""
    written = find_run(workspace_name, run_id).download_snapshot(output_dir, as_zip=as_zip)
    _report_written(output, written, output_dir)


def _report_written(output: str, written: list[str] | str, output_dir: Path) -> None:
    """What a download wrote: one zip (a path) or files (a list)."""
    as_zip = isinstance(written, str)
    if output == "json":
        emit(output, {"zip": written} if as_zip else {"files": written})
    else:
        click.echo(f"wrote {written}" if as_zip else f"wrote {len(written)} file(s) to {output_dir}")


@run.command("cancel")
@click.argument("run_id", metavar="RUN")
@workspace_option
@output_option
def cancel(run_id: str, workspace_name: str | None, output: str) -> None:
    """Cancel a run that has not ended."""
    target = find_run(workspace_name, run_id)
    target.cancel()
    emit(output, {"id": target.id, "status": target.status})
