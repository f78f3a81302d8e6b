"""Operator counters."""


def test_stats_count_table_writes_and_need_an_admin(api, user_token):
    before = api.ok("GET", "/v1/admin/stats")["table_writes"]
    api.ok("POST", "/v1/workspaces", {"name": "counted"})  # the workspace, its owner and the audit entry
    assert api.ok("GET", "/v1/admin/stats")["table_writes"] == before + 3
    status, body = api.call("GET", "/v1/admin/stats", token=user_token("bob"))
    assert status == 403 and body["code"] == "Forbidden"
