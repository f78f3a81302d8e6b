"""`nimbus user ...` and `nimbus token ...`: accounts and API tokens (creating users needs an admin)."""
from __future__ import annotations

import click

from nimbus.cli.common import api_client, output_option
from nimbus.cli.output import emit
from nimbus.client import ApiClient
from nimbus.tokens import create_token as mint_token, list_tokens as tokens_of, parse_expires_in, revoke_token

USER_COLUMNS = [("NAME", "name"), ("ADMIN", "is_admin"), ("CREATED", "created")]
TOKEN_COLUMNS = [("ID", "token_id"), ("NAME", "name"), ("CREATED", "created"),
                 ("EXPIRES", lambda t: t["expires"] or "never"),
                 ("SCOPE", lambda t: f"{t['workspace']} ({t['role']})" if t["workspace"] else "all workspaces"),
                 ("LAST USED", lambda t: t["last_used"] or "-")]
TOKEN_ROLES = click.Choice(["reader", "contributor", "owner"])


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


def _expires_in(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return parse_expires_in(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _owner(client: ApiClient, user_name: str | None) -> str:
    return user_name or client.get("/v1/whoami")["user"]


@token.command("create")
@click.option("--user", "user_name", help="Whose token (default: yours; others' need an admin).")
@click.option("--name", default="default", show_default=True, help="A label to recognise the token by.")
@click.option("--expires-in", callback=_expires_in, metavar="DURATION",
              help="Make it expire: seconds, or a number with s, m, h, d or w (30d, 12h, 3600). Default: never.")
@click.option("--workspace", "scope", metavar="WORKSPACE",
              help="Scope it to this one workspace: it works on no other, nor on user-level commands.")
@click.option("--role", type=TOKEN_ROLES,
              help="With --workspace: the highest role it acts with there (a CI token: contributor).")
@output_option
def create_token(user_name: str | None, name: str, expires_in: int | None, scope: str | None, role: str | None,
                 output: str) -> None:
    """Create an API token. Its secret is shown once only."""
    if role and not scope:
        raise click.BadParameter("--role caps a token on one workspace: give --workspace too", param_hint="--role")
    client = api_client()
    created = mint_token(client, _owner(client, user_name), name, expires_in=expires_in, workspace=scope, role=role)
    emit(output, created, keys=["token", "token_id", "user", "name", "created", "expires", "workspace", "role"])
    if output != "json":
        click.echo("store the token now: it cannot be shown again", err=True)


@token.command("list")
@click.option("--user", "user_name", help="Whose tokens (default: yours; others' need an admin).")
@output_option
def list_tokens(user_name: str | None, output: str) -> None:
    """Tokens, with their expiry, scope and last use (to the hour); never their secrets."""
    client = api_client()
    emit(output, tokens_of(client, _owner(client, user_name)), TOKEN_COLUMNS)


@token.command("revoke")
@click.argument("token_id")
@click.option("--user", "user_name", help="Whose token (default: yours; others' need an admin).")
@output_option
def revoke(token_id: str, user_name: str | None, output: str) -> None:
    """Revoke a token (by its ID, from `nimbus token list`): refused from its next request on."""
    client = api_client()
    emit(output, revoke_token(client, _owner(client, user_name), token_id))
