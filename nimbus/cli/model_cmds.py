"""`nimbus model ...`: register, find, download and delete model versions, move aliases, batch-score."""
from __future__ import annotations

from pathlib import Path

import click

from nimbus.batch_scoring import submit_batch_scoring
from nimbus.cli.common import connect, key_values, output_option, workspace_option
from nimbus.cli.output import emit, print_table
from nimbus.cli.run_cmds import report_submitted
from nimbus.experiment import Experiment, Run
from nimbus.model import Model
from nimbus.progress import wanted

MODEL_COLUMNS = [("NAME", "name"), ("VERSION", "version"), ("ALIASES", "aliases"), ("TAGS", "tags"),
                 ("FRAMEWORK", "framework"), ("CREATED", "created")]
MODEL_FIELDS = ["id", "name", "version", "asset_path", "total_bytes", "description", "framework", "framework_version",
                "tags", "properties", "aliases", "lineage", "deployments", "created", "created_by"]


@click.group()
def model() -> None:
    """Registered models: versioned files with tags, properties, lineage and aliases."""


def _ref(text: str, need_version: bool = False) -> tuple[str, str | None]:
    name, sep, version = text.partition(":")
    if not name or (sep and not version) or (need_version and not version):
        raise click.BadParameter(f"{text!r} is not NAME:VERSION" if need_version else f"{text!r} is not NAME[:VERSION]",
                                 param_hint="MODEL")
    return name, version or None


@model.command("register")
@click.argument("name")
@click.option("--path", "path", required=True,
              help="A local file or folder; with --run, a file or folder of the run (e.g. outputs/model.pkl).")
@click.option("--run", "run_id", metavar="RUN", help="Register the run's stored files (copied server-side).")
@click.option("--tag", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE", help="A write-once property (repeatable).")
@click.option("--description", help="What the model is.")
@click.option("--framework", help="e.g. scikit-learn.")
@click.option("--framework-version", help="e.g. 1.5.0.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@workspace_option
@output_option
def register(name: str, path: str, run_id: str | None, tag: tuple[str, ...], properties: tuple[str, ...],
             description: str | None, framework: str | None, framework_version: str | None, progress: bool | None,
             workspace_name: str | None, output: str) -> None:
    """Register NAME's next version from a local file or folder, or from a run's files."""

    workspace = connect(workspace_name)
    options = dict(tags=key_values(tag, "--tag"), properties=key_values(properties, "--property"), description=description,
                   model_framework=framework, model_framework_version=framework_version)
    if run_id is not None:
        registered = Run(workspace, run_id).register_model(name, path, **options)
    else:
        if not Path(path).exists():
            raise click.BadParameter(f"{path!r} does not exist (a run's file needs --run)", param_hint="--path")
        registered = Model.register(workspace, name, path, show_progress=wanted(progress), **options)
    emit(output, registered.details, keys=MODEL_FIELDS)


@model.command("list")
@click.option("--name", help="Only this model.")
@click.option("--tag", multiple=True, metavar="KEY[=VALUE]", help="Only versions with this tag (repeatable).")
@click.option("--all-versions", is_flag=True, help="Every version, not only the latest of each model.")
@workspace_option
@output_option
def list_models(name: str | None, tag: tuple[str, ...], all_versions: bool, workspace_name: str | None,
                output: str) -> None:
    """Registered models (their latest versions unless --all-versions)."""
    found = Model.list(connect(workspace_name), name=name, tags=list(tag), latest=not all_versions)
    emit(output, [m.details for m in found], MODEL_COLUMNS)


@model.command("show")
@click.argument("ref", metavar="NAME[:VERSION|:ALIAS]")
@workspace_option
@output_option
def show(ref: str, workspace_name: str | None, output: str) -> None:
    """One version (default: the latest)."""
    name, version = _ref(ref)
    details = Model(connect(workspace_name), name, version).details
    if output == "json":
        emit(output, details)
        return
    emit(output, details, keys=MODEL_FIELDS)
    click.echo("files:")
    print_table(details["files"], [("PATH", "path"), ("SIZE", "size")])


@model.command("download")
@click.argument("ref", metavar="NAME[:VERSION|:ALIAS]")
@click.option("--target", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Where to write the files.")
@click.option("--zip", "as_zip", is_flag=True, help="Write one NAME-VERSION.zip instead of separate files.")
@click.option("--overwrite", is_flag=True, help="Replace files that exist already.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@workspace_option
@output_option
def download(ref: str, target: Path, as_zip: bool, overwrite: bool, progress: bool | None,
             workspace_name: str | None, output: str) -> None:
    """Download a version's files."""
    name, version = _ref(ref)
    found = Model(connect(workspace_name), name, version)
    written = found.download(target, exist_ok=overwrite, zip=as_zip, show_progress=wanted(progress))
    if output == "json":
        emit(output, {"id": found.id, "zip" if as_zip else "path": written})
    else:
        click.echo(f"wrote {written}")


@model.command("delete")
@click.argument("ref", metavar="NAME:VERSION")
@workspace_option
@output_option
def delete(ref: str, workspace_name: str | None, output: str) -> None:
    """Delete one version and its files (refused while a deployment uses it)."""
    name, version = _ref(ref, need_version=True)
    if not version.isdigit():
        raise click.BadParameter(f"{ref!r}: give the version number, not an alias", param_hint="MODEL")
    found = Model(connect(workspace_name), name, version)
    found.delete()
    emit(output, {"deleted": found.id})


@model.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False)
@click.option("--delete", "remove", is_flag=True, help="Remove the alias instead.")
@workspace_option
@output_option
def alias(name: str, alias: str, version: str | None, remove: bool, workspace_name: str | None, output: str) -> None:
    """Point ALIAS at VERSION (creating or moving it), or remove it with --delete."""
    workspace = connect(workspace_name)
    if remove == (version is not None):
        raise click.UsageError("give VERSION, or --delete")
    if remove:
        emit(output, Model.delete_alias(workspace, name, alias))
    else:
        emit(output, Model(workspace, name, version).set_alias(alias))


@model.command("aliases")
@click.argument("name")
@workspace_option
@output_option
def aliases(name: str, workspace_name: str | None, output: str) -> None:
    """A model's aliases and the history of their moves."""
    found = Model.get_aliases(connect(workspace_name), name)
    if output == "json":
        emit(output, found)
        return
    print_table([{"alias": a, "version": v} for a, v in sorted(found["aliases"].items())],
                [("ALIAS", "alias"), ("VERSION", "version")])
    click.echo("")
    print_table(found["history"], [("ALIAS", "alias"), ("FROM", "from"), ("TO", "to"), ("BY", "by"), ("AT", "at")])


@model.command("batch-score")
@click.argument("refs", nargs=-1, required=True, metavar="NAME[:VERSION|:ALIAS]...")
@click.option("--entry-script", required=True, help="Defines init() and run(raw_data), relative to --source-dir.")
@click.option("--inputs", required=True, help="Folder of input files, inside --source-dir.")
@click.option("--source-dir", type=click.Path(file_okay=False, exists=True), default=".", show_default=True,
              help="Folder to snapshot: the entry script, its helpers and the inputs.")
@click.option("-e", "--experiment", "experiment_name", default="batch-scoring", show_default=True)
@click.option("--output-file", default="predictions.jsonl", show_default=True, help="Written under outputs/.")
@click.option("--continue-on-error", is_flag=True, help="Complete the run even when some inputs failed.")
@click.option("--wait", is_flag=True, help="Print the run's output until it ends; exit 0 only if it Completed.")
@workspace_option
@output_option
def batch_score(refs: tuple[str, ...], entry_script: str, inputs: str, source_dir: str, experiment_name: str,
                output_file: str, continue_on_error: bool, wait: bool, workspace_name: str | None, output: str) -> None:
    """Score every file of a folder with the models' entry script, as a run writing outputs/predictions.jsonl."""
    for ref in refs:
        _ref(ref)
    experiment = Experiment(connect(workspace_name), experiment_name)
    submitted = submit_batch_scoring(experiment, list(refs), entry_script, source_dir, inputs,
                                     output_file=output_file, continue_on_error=continue_on_error)
    report_submitted(submitted, wait, output)
