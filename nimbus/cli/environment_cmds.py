"""`nimbus environment ...`: register, list and show versioned environments."""
from __future__ import annotations

from pathlib import Path

import click

from nimbus.cli.common import connect, key_values, output_option, workspace_option
from nimbus.cli.output import emit, print_table
from nimbus.environment import Environment

COLUMNS = [("NAME", "name"), ("VERSION", "version"), ("PYTHON", lambda e: e["definition"]["python"]),
           ("PACKAGES", lambda e: len(e["definition"]["pip"])), ("USED", "used"), ("CREATED", "created")]
FIELDS = ["id", "name", "version", "hash", "python", "base_image", "variables", "used", "created", "created_by"]


@click.group()
def environment() -> None:
    """Environments: pip requirements, Python version and variables, versioned and built once per definition."""


@environment.command("create")
@click.argument("name")
@click.option("--file", "file_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="requirements.txt, or env.yml (python, pip, variables, base_image; or conda-style dependencies).")
@click.option("--python", "python_version", metavar="MAJOR.MINOR", help="e.g. 3.11 (default: the file's, else the "
                                                                         "service's).")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE",
              help="A variable of the script's environment (repeatable). Stored and shown in clear: for a "
                   "secret, use `nimbus secret set` and `nimbus run submit --secret-var`.")
@click.option("--base-image", help="The image built on AWS (default python:<python>-slim).")
@workspace_option
@output_option
def create(name: str, file_path: Path, python_version: str | None, variables: tuple[str, ...],
           base_image: str | None, workspace_name: str | None, output: str) -> None:
    """Register NAME's next version (the latest one when the definition is unchanged)."""
    if file_path.suffix in (".yml", ".yaml"):
        env = Environment.from_yaml(name, file_path)
    else:
        env = Environment.from_pip_requirements(name, file_path)
    env.python_version = python_version or env.python_version
    env.environment_variables.update(key_values(variables, "--var"))
    env.base_image = base_image or env.base_image
    _emit_version(output, env.register(connect(workspace_name)))


@environment.command("list")
@workspace_option
@output_option
def list_environments(workspace_name: str | None, output: str) -> None:
    """Every environment's latest version."""
    found = Environment.list(connect(workspace_name))
    emit(output, [env.details for env in found.values()], COLUMNS)


@environment.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@workspace_option
@output_option
def show(ref: str, workspace_name: str | None, output: str) -> None:
    """One version (default: the latest), with its pip requirements and builds."""
    name, sep, version = ref.partition(":")
    if not name or (sep and not version):
        raise click.BadParameter(f"{ref!r} is not NAME[:VERSION]", param_hint="REF")
    _emit_version(output, Environment.get(connect(workspace_name), name, version or None))


def _emit_version(output: str, env: Environment) -> None:
    if output == "json":
        emit(output, env.details)
        return
    definition = env.details["definition"]
    emit(output, {**env.details, **{k: definition[k] for k in ("python", "base_image", "variables")}}, keys=FIELDS)
    click.echo("pip:")
    for line in definition["pip"]:
        click.echo(f"  {line}")
    if env.builds:
        click.echo("builds:")
        print_table(env.builds, [("KIND", "kind"), ("STATE", "state"), ("IMAGE", "image_uri")])
