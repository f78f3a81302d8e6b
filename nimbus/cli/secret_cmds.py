"""`nimbus secret ...`: set, list and delete the workspace's secrets (values are read back by runs only)."""
from __future__ import annotations

from pathlib import Path

import click

from nimbus.cli.common import connect, output_option, workspace_option
from nimbus.cli.output import emit
from nimbus.cli.secret_input import read_secret

COLUMNS = [("NAME", "name"), ("VERSION", "version"), ("UPDATED", "updated"), ("UPDATED BY", "updated_by"),
           ("CREATED", "created"), ("CREATED BY", "created_by")]


@click.group()
def secret() -> None:
    """Workspace secrets: values a run reads with Run.get_secret or --secret-var, masked as *** in its logs.

    Plain environment variables (--var, environment_variables) are stored and shown in clear; secrets are not.
    """


@secret.command("set")
@click.argument("name")
@click.option("--value-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Read the value from this file (a final line end is dropped).")
@click.option("--value", "value_option", metavar="VALUE",
              help="The value itself: other users may see it in the process list and your shell keeps it "
                   "in its history, so prefer --value-file or standard input.")
@workspace_option
@output_option
def set_secret(name: str, value_file: Path | None, value_option: str | None, workspace_name: str | None,
               output: str) -> None:
    """Create secret NAME or replace its value.

    The value is read from --value-file, else from standard input (on a terminal, a prompt that does not
    echo it)."""
    value = read_secret(f"secret {name!r}", value_file, value_option, "--value-file", "--value")
    emit(output, connect(workspace_name).get_default_keyvault().set_secret(name, value))


@secret.command("list")
@workspace_option
@output_option
def list_secrets(workspace_name: str | None, output: str) -> None:
    """Every secret's name, version and who set it when (never a value)."""
    emit(output, connect(workspace_name).get_default_keyvault().list_secrets(), COLUMNS)


@secret.command("delete")
@click.argument("name")
@workspace_option
@output_option
def delete_secret(name: str, workspace_name: str | None, output: str) -> None:
    """Delete secret NAME: runs can no longer read it."""
    connect(workspace_name).get_default_keyvault().delete_secret(name)
    emit(output, {"name": name, "deleted": True})

