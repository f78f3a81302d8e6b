"""The `nimbus` command: every group and command, under one root that reports errors in one line."""
from __future__ import annotations

import click

from nimbus.cli.admin_cmds import token, user
from nimbus.cli.common import NimbusGroup
from nimbus.cli.compute_cmds import agent, compute
from nimbus.cli.dataset_cmds import dataset
from nimbus.cli.datastore_cmds import datastore
from nimbus.cli.endpoint_cmds import deploy, endpoint
from nimbus.cli.environment_cmds import environment
from nimbus.cli.model_cmds import model
from nimbus.cli.platform_cmds import login, up, whoami
from nimbus.cli.run_cmds import run
from nimbus.cli.secret_cmds import secret
from nimbus.cli.workspace_cmds import experiment, workspace
from nimbus.version import __version__


@click.group(cls=NimbusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nimbus")
def cli() -> None:
    """Nimbus: experiments, runs, metrics and files on a serverless ML platform.

    Connects with NIMBUS_URL/NIMBUS_TOKEN, else the profile saved by `nimbus login`, else the
    local platform started by `nimbus up`.
    """


for command in (up, login, whoami, workspace, experiment, run, user, token, deploy, endpoint, model,
                environment, compute, agent, secret, datastore, dataset):
    cli.add_command(command)
