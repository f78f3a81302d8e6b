"""`nimbus dataset ...`: versioned references to data on datastores (docs/datasets.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from nimbus.cli.common import EXIT_NOT_SUCCEEDED, connect, key_values, output_option, workspace_option
from nimbus.cli.output import emit
from nimbus.dataset import Dataset, TabularDataset
from nimbus.progress import wanted

COLUMNS = [("NAME", "name"), ("VERSION", "version"), ("TYPE", "type"), ("FILES", "file_count"),
           ("BYTES", "total_bytes"), ("ROWS", "row_count"), ("CREATED", "created")]
FIELDS = ["name", "version", "type", "paths", "format", "options", "fingerprint", "file_count", "total_bytes",
          "row_count", "description", "tags", "created", "created_by", "schema"]
PROFILE_COLUMNS = [("COLUMN", "name"), ("TYPE", "type"), ("MISSING", "missing"), ("DISTINCT", "distinct"),
                   ("MIN", "min"), ("MAX", "max"), ("MEAN", "mean")]


@click.group()
def dataset() -> None:
    """Datasets: versioned references to files or tables on datastores; the data stays where it is."""


def _named(reference: str) -> tuple[str, str]:
    """NAME or NAME:VERSION (a number or latest)."""
    name, _, version = reference.partition(":")
    return name, version or "latest"


def _pairs(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for value in paths:
        datastore, sep, path = value.partition(":")
        if not sep or not datastore or not path:
            raise click.BadParameter(f"{value!r} is not DATASTORE:PATH", param_hint="--path")
        pairs.append((datastore, path))
    return pairs


@dataset.command("register")
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(["file", "tabular"]), required=True)
@click.option("--path", "paths", multiple=True, required=True, metavar="DATASTORE:PATH",
              help="A file, folder or glob (*, ?, [..], **) on a datastore; repeat for more.")
@click.option("--format", "fmt", type=click.Choice(["delimited", "parquet", "json_lines"]), default="delimited",
              show_default=True, help="Tabular data's format.")
@click.option("--separator", default=",", show_default=True, help="Delimited files' separator.")
@click.option("--no-header", is_flag=True, help="Delimited files have no header line (columns f0, f1, …).")
@click.option("--encoding", default="utf8", show_default=True, help="Delimited files' encoding.")
@click.option("--description", default="")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE")
@click.option("--new-version", is_flag=True, help="Add a version to a dataset that exists (create_new_version).")
@workspace_option
@output_option
def register(name: str, kind: str, paths: tuple[str, ...], fmt: str, separator: str, no_header: bool, encoding: str,
             description: str, tags: tuple[str, ...], new_version: bool, workspace_name: str | None,
             output: str) -> None:
    """Register dataset NAME: the paths are listed and fingerprinted; tabular data is also profiled. The
    same definition over unchanged data answers the version it already is."""
    pairs = _pairs(paths)
    if kind == "file":
        definition = Dataset.File.from_files(pairs)
    elif fmt == "parquet":
        definition = Dataset.Tabular.from_parquet_files(pairs)
    elif fmt == "json_lines":
        definition = Dataset.Tabular.from_json_lines_files(pairs)
    else:
        definition = Dataset.Tabular.from_delimited_files(pairs, separator, not no_header, encoding)
    made = definition.register(connect(workspace_name), name, description, key_values(tags, "--tag"),
                               create_new_version=new_version)
    emit(output, made.details, keys=FIELDS + ["existing"])


@dataset.command("list")
@workspace_option
@output_option
def list_datasets(workspace_name: str | None, output: str) -> None:
    """Every dataset's latest version."""
    emit(output, [d.details for d in Dataset.list(connect(workspace_name))], COLUMNS)


@dataset.command("show")
@click.argument("reference", metavar="NAME[:VERSION]")
@click.option("--versions", "all_versions", is_flag=True, help="Every version of the dataset.")
@click.option("--runs", "runs", is_flag=True, help="The runs that read the version (its lineage).")
@workspace_option
@output_option
def show(reference: str, all_versions: bool, runs: bool, workspace_name: str | None, output: str) -> None:
    """A dataset version (the latest by default): its definition, fingerprint and, for tables, schema."""
    workspace, (name, version) = connect(workspace_name), _named(reference)
    if all_versions:
        emit(output, [d.details for d in Dataset.versions(workspace, name)], COLUMNS)
    elif runs:
        emit(output, Dataset.get_by_name(workspace, name, version).runs(),
             [("RUN", "run_id"), ("INPUT", "input"), ("SUBMITTED", "at")])
    else:
        emit(output, Dataset.get_by_name(workspace, name, version).details, keys=FIELDS)


@dataset.command("profile")
@click.argument("reference", metavar="NAME[:VERSION]")
@workspace_option
@output_option
def profile(reference: str, workspace_name: str | None, output: str) -> None:
    """A tabular dataset version's column profile, as it was registered."""
    found = Dataset.get_by_name(connect(workspace_name), *_named(reference))
    if not isinstance(found, TabularDataset):
        raise click.UsageError(f"{found.id} is a file dataset: only tabular datasets have a profile")
    emit(output, found.get_profile(), PROFILE_COLUMNS)


@dataset.command("download")
@click.argument("reference", metavar="NAME[:VERSION]")
@click.option("-d", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the files.")
@click.option("--overwrite", is_flag=True, help="Replace local files (otherwise they are kept).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@workspace_option
@output_option
def download(reference: str, output_dir: Path, overwrite: bool, progress: bool | None, workspace_name: str | None,
             output: str) -> None:
    """Download a dataset version's files, keeping their paths (fetched once per machine, then copied
    from the local cache)."""
    found = Dataset.get_by_name(connect(workspace_name), *_named(reference))
    written = found.download(output_dir, overwrite=overwrite, show_progress=wanted(progress))
    emit(output, written if output == "json" else f"{len(written)} file(s) of {found.id} under {output_dir}")


@dataset.command("verify")
@click.argument("reference", metavar="NAME[:VERSION]")
@workspace_option
@output_option
def verify(reference: str, workspace_name: str | None, output: str) -> None:
    """List the data again and compare it with the version's fingerprint; exits 3 when it changed."""
    found = Dataset.get_by_name(connect(workspace_name), *_named(reference))
    report = found.verify()
    if output == "json":
        emit(output, report)
    elif report["matches"]:
        click.echo(f"{found.id} matches its data (fingerprint {report['fingerprint'][:12]})")
    else:
        counts = report["counts"]
        click.echo(f"{found.id} no longer matches its data: {counts['changed']} changed, {counts['added']} added, "
                   f"{counts['removed']} removed")
        for what in ("changed", "added", "removed"):
            for item in report[what]:
                click.echo(f"  {what}: {item['datastore']}:{item['path']}")
    if not report["matches"]:
        sys.exit(EXIT_NOT_SUCCEEDED)


@dataset.command("delete")
@click.argument("reference", metavar="NAME:VERSION")
@workspace_option
@output_option
def delete(reference: str, workspace_name: str | None, output: str) -> None:
    """Unregister one version; the data stays where it is."""
    name, version = _named(reference)
    if version == "latest":
        raise click.UsageError("name the version to unregister: NAME:VERSION")
    found = Dataset.get_by_name(connect(workspace_name), name, version)
    found.unregister()
    emit(output, {"name": name, "version": found.version, "deleted": True})
