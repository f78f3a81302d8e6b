"""Tokens and the audit log through the SDK."""
from __future__ import annotations

import pytest

from nimbus import Experiment, Workspace
from nimbus.client import ApiClient
from nimbus.exceptions import AuthenticationError, ForbiddenError
from nimbus.tokens import list_tokens, parse_expires_in, revoke_token


@pytest.mark.parametrize("given, seconds", [(None, None), (3600, 3600), ("3600", 3600), ("90s", 90), ("45m", 2700),
                                            ("12h", 43200), ("30d", 2592000), ("2w", 1209600), (" 7D ", 604800)])
def test_durations_are_read_as_seconds(given, seconds):
    assert parse_expires_in(given) == seconds


@pytest.mark.parametrize("given", ["", "soon", "1.5h", "-3d", "3 days", "10y", True, 2.5])
def test_other_durations_are_refused(given):
    with pytest.raises(ValueError, match="expires_in"):
        parse_expires_in(given)


def test_a_workspace_token_is_scoped_capped_listed_and_revoked(platform, workspace):
    # Given a contributor-capped token of the admin on `default`, expiring in 30 days
    ci = workspace.create_token("ci", role="contributor", expires_in="30d")
    assert (ci["workspace"], ci["role"], ci["user"]) == ("default", "contributor", "admin")
    assert ci["expires"] is not None and ci["token"].startswith("nmb_")

    # It logs runs in its workspace but may not read the audit log, nor create workspaces
    scoped = Workspace("default", platform.url, ci["token"])
    Experiment(scoped, "nightly").start_logging().complete()
    with pytest.raises(ForbiddenError, match="capped at contributor"):
        scoped.audit_log()
    with pytest.raises(ForbiddenError, match="scoped to workspace 'default'"):
        Workspace.create("elsewhere", url=platform.url, token=ci["token"])

    # It is listed without its secret, and revoked at once
    client = ApiClient(platform.url, platform.token)
    listed = {t["token_id"]: t for t in list_tokens(client, "admin")}
    assert listed[ci["token_id"]]["role"] == "contributor" and "token" not in listed[ci["token_id"]]
    revoke_token(client, "admin", ci["token_id"])
    with pytest.raises(AuthenticationError, match="invalid or revoked"):
        scoped.whoami()


def test_the_audit_log_reads_newest_first_filtered_and_limited(workspace, user_token):
    for name in ("ann", "ben", "cid"):
        user_token(name)
        workspace.add_member(name, "reader")
    workspace.add_member("ann", "contributor")
    log = workspace.audit_log()
    assert [(e["action"], e["target"]) for e in log[:4]] == [
        ("member.role_changed", "ann"), ("member.added", "cid"), ("member.added", "ben"), ("member.added", "ann")]
    assert [e["target"] for e in workspace.audit_log(action="member.added", limit=2)] == ["cid", "ben"]
    assert all(e["actor"] == "admin" and e["actor_token_id"] for e in log)
