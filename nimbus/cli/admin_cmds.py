"""`nimbus user ...` and `nimbus token ...`: accounts and API tokens (creating users needs an admin)."""
from __future__ import annotations

import click

from nimbus.cli.common import api_client, output_option
from nimbus.cli.output import emit
from nimbus.client import api_path

USER_COLUMNS = [("NAME", "name"), ("ADMIN", "is_admin"), ("CREATED", "created")]


@click.group()
def user() -> None:
    """User accounts."""


@user.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@output_option
def create_user(name: str, admin: bool, output: str) -> None:
    """Create a user (then give them a token with `nimbus token create --user NAME`)."""
    emit(output, api_client().post("/v1/users", {"name": name, "is_admin": admin}))


@user.command("list")
@output_option
def list_users(output: str) -> None:
    """Every user."""
    emit(output, api_client().get("/v1/users")["users"], USER_COLUMNS)


@click.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--user", "user_name", help="Whose token (default: yours; others' need an admin).")
@click.option("--name", default="default", show_default=True, help="A label to recognise the token by.")
@output_option
def create_token(user_name: str | None, name: str, output: str) -> None:
    """Create an API token. Its secret is shown once only."""
    client = api_client()
    owner = user_name or client.get("/v1/whoami")["user"]
    created = client.post(api_path("users", owner, "tokens"), {"name": name})
    emit(output, created, keys=["token", "token_id", "user", "name", "created"])
    if output != "json":
        click.echo("store the token now: it cannot be shown again", err=True)
