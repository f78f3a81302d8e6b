"""What every command shares: the options, the connection, and turning errors into one line."""
from __future__ import annotations

from typing import Any, Callable

import click

from nimbus.client import ApiClient
from nimbus.config import resolve
from nimbus.exceptions import NimbusError
from nimbus.experiment import Run
from nimbus.workspace import Workspace


class CommandError(click.ClickException):
    """Printed as `error: <message>` on stderr; exit status 1."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class NimbusGroup(click.Group):
    """The root group: API and file errors end the command with one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NimbusError as err:
            raise CommandError(err.message) from None
        except OSError as err:
            where = f" ({err.filename})" if err.filename else ""
            raise CommandError(f"{err.strerror or err}{where}") from None


def workspace_option(command: Callable) -> Callable:
    return click.option("-w", "--workspace", "workspace_name", metavar="NAME",
                        help="Workspace (default: $NIMBUS_WORKSPACE, the saved profile's, or 'default').")(command)


def output_option(command: Callable) -> Callable:
    return click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
                        help="table for people, json for programs.")(command)


def connect(workspace_name: str | None = None) -> Workspace:
    return Workspace(workspace_name)


def api_client() -> ApiClient:
    config = resolve()
    return ApiClient(config.url, config.token)


def find_run(workspace_name: str | None, run_id: str) -> Run:
    return Run.get(connect(workspace_name), run_id)


def key_values(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """KEY=VALUE options (--tag, --var, …) as a mapping; a malformed one is refused naming the option."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        found[key] = value
    return found
