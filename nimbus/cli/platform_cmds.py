"""Getting connected: `nimbus up`, `nimbus login`, `nimbus whoami`."""
from __future__ import annotations

from pathlib import Path

import click

from nimbus.cli.common import CommandError, output_option, workspace_option
from nimbus.cli.output import emit
from nimbus.client import ApiClient, api_path
from nimbus.config import resolve, save_profile
from nimbus.home import nimbus_home


@click.command()
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the platform keeps its data (default: $NIMBUS_HOME or ~/.nimbus).")
def up(port: int, host: str, home: Path | None) -> None:
    """Run the local platform in the foreground (Ctrl-C stops it)."""
    try:  # here, not at the top: the server is an optional install (nimbus-ml[server]) the SDK runs without
        from chalicelib.local.platform import serve
    except ImportError as missing:
        raise _not_installed(missing) from None
    home = home or nimbus_home()
    try:
        serve(home, host=host, port=port)
    except ImportError as missing:  # the HTTP server's own packages load only once the platform starts
        raise _not_installed(missing) from None
    except OSError as err:
        raise CommandError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None


def _not_installed(missing: ImportError) -> CommandError:
    return CommandError(f"the local platform is not installed here ({missing.name} is missing); "
                        "install nimbus-ml[server]")


@click.command()
@click.option("--url", required=True, help="The service's URL, e.g. https://…execute-api…amazonaws.com/dev")
@click.option("--token", required=True, prompt=True, hide_input=True, help="Your API token (nmb_…).")
@workspace_option
@output_option
def login(url: str, token: str, workspace_name: str | None, output: str) -> None:
    """Check a URL and token, then save them as your profile."""
    client = ApiClient(url, token)
    me = client.get("/v1/whoami")
    if workspace_name:
        client.get(api_path("workspaces", workspace_name))  # fails now rather than at first use
    path = save_profile(url, token, workspace_name)
    emit(output, {"url": client.url, "user": me["user"], "workspace": workspace_name or "default",
                  "profile": str(path)})


@click.command()
@workspace_option
@output_option
def whoami(workspace_name: str | None, output: str) -> None:
    """Who the configured token belongs to, and which service and workspace are in use."""
    config = resolve(workspace=workspace_name)
    me = ApiClient(config.url, config.token).get("/v1/whoami")
    emit(output, {**me, "url": config.url, "workspace": config.workspace, "source": config.source})
