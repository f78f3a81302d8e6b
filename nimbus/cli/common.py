"""What every command shares: the options, the connection, and turning errors into one line."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import click

from nimbus.client import ApiClient
from nimbus.config import resolve
from nimbus.exceptions import NimbusError, ServiceUnavailableError
from nimbus.experiment import Run
from nimbus.webservice import WebserviceDeploymentError, WebserviceTimeout
from nimbus.workspace import Workspace


# Exit statuses (docs/ci.md): 2 is click's own, for a command line it cannot parse.
EXIT_ERROR = 1  # the service refused the request, or a local file could not be used
EXIT_NOT_SUCCEEDED = 3  # what the command waited for (a run, a deployment) ended without success
EXIT_UNREACHABLE = 4  # the service could not be reached, or stayed unavailable: trying again may work
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (`| head`), as a shell reports SIGPIPE


class CommandError(click.ClickException):
    """Printed as `error: <message>` on stderr; exit status EXIT_ERROR unless told otherwise."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class NimbusGroup(click.Group):
    """The root group: API and file errors end the command with one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a reader gone away shows here, not at the interpreter's exit
            return result
        except BrokenPipeError:
            # Nothing more can reach the reader: end quietly, as `nimbus … | head` expects.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except ServiceUnavailableError as err:
            raise CommandError(err.message, EXIT_UNREACHABLE) from None
        except NimbusError as err:
            # A deployment waited for that ended Failed, or was still rolling out when the wait ended
            waited = isinstance(err, (WebserviceDeploymentError, WebserviceTimeout))
            raise CommandError(err.message, EXIT_NOT_SUCCEEDED if waited else EXIT_ERROR) from None
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
