"""`nimbus workspace ...`, `nimbus workspace member ...` and `nimbus experiment ...`."""
from __future__ import annotations

import click

from nimbus.cli.common import connect, output_option, workspace_option
from nimbus.cli.output import emit
from nimbus.client import api_path
from nimbus.workspace import Workspace

MEMBER_ROLES = click.Choice(["reader", "contributor", "owner"])


@click.group()
def workspace() -> None:
    """Workspaces and their members."""


@workspace.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the workspace is for.")
@output_option
def create_workspace(name: str, description: str, output: str) -> None:
    """Create a workspace; you become its owner."""
    emit(output, Workspace.create(name, description).get_details())


@workspace.command("list")
@output_option
def list_workspaces(output: str) -> None:
    """Workspaces you are a member of, with your role."""
    emit(output, connect().client.get("/v1/workspaces")["workspaces"], [("NAME", "name"), ("ROLE", "role")])


@workspace.command("show")
@click.argument("name", required=False)
@workspace_option
@output_option
def show_workspace(name: str | None, workspace_name: str | None, output: str) -> None:
    """Details of a workspace (default: the current one)."""
    emit(output, connect(name or workspace_name).get_details())


@workspace.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also delete every experiment, run and file in it.")
@output_option
def delete_workspace(name: str, force: bool, output: str) -> None:
    """Delete a workspace (refused while it holds experiments, unless --force)."""
    emit(output, connect(name).delete(force=force))


AUDIT_COLUMNS = [("AT", "at"), ("ACTOR", lambda e: e["actor"] or "(platform)"), ("TOKEN", "actor_token_id"),
                 ("ACTION", "action"), ("TARGET", "target"), ("DETAILS", "details")]


@workspace.command("audit")
@click.option("--action", help="Only this kind of entry, e.g. member.added or token.created.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many entries.")
@workspace_option
@output_option
def audit(action: str | None, limit: int, workspace_name: str | None, output: str) -> None:
    """The workspace's audit log, newest first (owners and admins): who changed what, when, with which token."""
    emit(output, connect(workspace_name).audit_log(action=action, limit=limit), AUDIT_COLUMNS)


@workspace.group("member")
def member() -> None:
    """Who may use a workspace: reader < contributor < owner."""


@member.command("add")
@click.argument("user")
@click.option("--role", type=MEMBER_ROLES, required=True, help="The user's role in the workspace.")
@workspace_option
@output_option
def add_member(user: str, role: str, workspace_name: str | None, output: str) -> None:
    """Add a user to the workspace, or change their role."""
    emit(output, connect(workspace_name).add_member(user, role))


@member.command("list")
@workspace_option
@output_option
def list_members(workspace_name: str | None, output: str) -> None:
    """The workspace's members."""
    emit(output, connect(workspace_name).members(),
         [("USER", "user"), ("ROLE", "role"), ("ADDED", "added"), ("ADDED BY", "added_by")])


@member.command("remove")
@click.argument("user")
@workspace_option
@output_option
def remove_member(user: str, workspace_name: str | None, output: str) -> None:
    """Remove a user from the workspace."""
    target = connect(workspace_name)
    target.remove_member(user)
    emit(output, {"workspace": target.name, "removed": user})


@click.group()
def experiment() -> None:
    """Experiments: named groups of runs."""


@experiment.command("list")
@workspace_option
@output_option
def list_experiments(workspace_name: str | None, output: str) -> None:
    """The workspace's experiments."""
    target = connect(workspace_name)
    rows = list(target.client.paged(api_path("workspaces", target.name, "experiments"), "experiments",
                                    {"max_results": 1000}))
    emit(output, rows, [("NAME", "name"), ("RUNS", "run_count"), ("LAST RUN", "last_run"),
                        ("CREATED", "created"), ("CREATED BY", "created_by")])


@experiment.command("show")
@click.argument("name")
@workspace_option
@output_option
def show_experiment(name: str, workspace_name: str | None, output: str) -> None:
    """Details of one experiment."""
    target = connect(workspace_name)
    emit(output, target.client.get(api_path("workspaces", target.name, "experiments", name)))
