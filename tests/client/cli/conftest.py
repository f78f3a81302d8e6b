"""The CLI against the real app, served over HTTP in-process, through click's test runner."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nimbus.cli.main import cli
from tests.client.sdk.live_platform import client_env, metrics, platform, user_token, workspace  # noqa: F401


@pytest.fixture
def nimbus(platform):
    """Runs `nimbus ARGS...` against the platform; returns click's Result (json= parses stdout)."""
    runner = CliRunner(mix_stderr=False)

    def invoke(*args: str, token: str | None = None, json_output: bool = False):
        env = {"NIMBUS_URL": platform.url, "NIMBUS_TOKEN": token or platform.token}
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        if json_output:
            assert result.exit_code == 0, result.stderr
            return json.loads(result.stdout)
        return result

    return invoke
