"""`nimbus token create|list|revoke` and `nimbus workspace audit` against the real app."""
from __future__ import annotations


def test_token_create_with_expiry_and_scope_then_list_and_revoke(nimbus):
    # Given a CI token: contributor on `default`, expiring in 30 days
    ci = nimbus("token", "create", "--name", "ci", "--workspace", "default", "--role", "contributor",
                "--expires-in", "30d", "-o", "json", json_output=True)
    assert (ci["workspace"], ci["role"], ci["name"]) == ("default", "contributor", "ci") and ci["expires"]
    nimbus("whoami", token=ci["token"])  # used once: its last use shows

    # It is listed, with its scope and expiry, and never its secret
    listed = nimbus("token", "list", "-o", "json", json_output=True)
    mine = {t["token_id"]: t for t in listed}[ci["token_id"]]
    assert (mine["workspace"], mine["role"], mine["expires"]) == ("default", "contributor", ci["expires"])
    table = nimbus("token", "list")
    assert table.exit_code == 0 and "default (contributor)" in table.stdout and "all workspaces" in table.stdout
    assert "EXPIRES" in table.stdout and "LAST USED" in table.stdout and "nmb_" not in table.stdout

    # It may not list tokens itself: user-level commands are not for a scoped token
    refused = nimbus("token", "list", token=ci["token"])
    assert refused.exit_code == 1 and "scoped to workspace 'default'" in refused.stderr

    # Revoked, it is refused at once
    assert nimbus("token", "revoke", ci["token_id"], "-o", "json", json_output=True) == {"revoked": ci["token_id"]}
    gone = nimbus("whoami", token=ci["token"])
    assert (gone.exit_code, gone.stderr) == (1, "error: invalid or revoked token\n")
    again = nimbus("token", "revoke", ci["token_id"])
    assert again.exit_code == 1 and "not found" in again.stderr


def test_expires_in_takes_seconds_and_durations_and_refuses_others(nimbus):
    hourly = nimbus("token", "create", "--expires-in", "3600", "-o", "json", json_output=True)
    daily = nimbus("token", "create", "--expires-in", "12h", "-o", "json", json_output=True)
    assert hourly["expires"] < daily["expires"]
    never = nimbus("token", "create", "-o", "json", json_output=True)
    assert never["expires"] is None
    for bad in ("soon", "1.5h", "-1"):
        result = nimbus("token", "create", "--expires-in", bad)
        assert result.exit_code == 2 and "--expires-in" in result.stderr, (bad, result.stderr)
    too_short = nimbus("token", "create", "--expires-in", "10s")
    assert too_short.exit_code == 1 and "expires_in must be between 60" in too_short.stderr
    lone_role = nimbus("token", "create", "--role", "reader")
    assert lone_role.exit_code == 2 and "--workspace" in lone_role.stderr


def test_workspace_audit_shows_who_did_what(nimbus, user_token):
    user_token("bob")
    nimbus("workspace", "member", "add", "bob", "--role", "reader", "-w", "default")
    nimbus("workspace", "member", "add", "bob", "--role", "contributor", "-w", "default")
    entries = nimbus("workspace", "audit", "-w", "default", "-o", "json", json_output=True)
    assert [(e["action"], e["target"]) for e in entries[:2]] == [("member.role_changed", "bob"),
                                                                 ("member.added", "bob")]
    only = nimbus("workspace", "audit", "-w", "default", "--action", "member.added", "-o", "json", json_output=True)
    assert [e["target"] for e in only] == ["bob"]
    assert len(nimbus("workspace", "audit", "-w", "default", "--limit", "1", "-o", "json", json_output=True)) == 1
    table = nimbus("workspace", "audit", "-w", "default")
    assert table.exit_code == 0 and "member.role_changed" in table.stdout and "admin" in table.stdout
    # a reader may not read it
    reader = user_token("rita")
    nimbus("workspace", "member", "add", "rita", "--role", "reader", "-w", "default")
    refused = nimbus("workspace", "audit", "-w", "default", token=reader)
    assert refused.exit_code == 1 and "owner" in refused.stderr
