"""Each workspace's audit log through the API, on both backends: what is recorded, by whom and through which
token; who may read it; that nothing can change it; what becomes of it when the workspace goes."""
from __future__ import annotations

import json

from chalicelib.api.routing import ROUTES
from chalicelib.domain import table_keys
from chalicelib.store.table import Query
from tests.server.api.test_endpoints import ENDPOINTS, deploy, hosted, lambda_host, register  # noqa: F401

AUDIT = "/v1/workspaces/ws/audit"


def whoami(api, token="default") -> dict:
    return api.ok("GET", "/v1/whoami", token=token)


def entries(api, path=AUDIT, token="default") -> list[dict]:
    """Every entry, oldest first."""
    found, page_token = [], None
    while True:
        page = api.ok("GET", path + (f"?page_token={page_token}" if page_token else ""), token=token)
        found += page["entries"]
        page_token = page["next_page_token"]
        if not page_token:
            return found[::-1]


def test_membership_and_token_changes_are_recorded_with_actor_and_token(api, user_token):
    # Given a workspace whose owner adds, promotes and removes a member and mints and revokes a scoped token
    owner = user_token("olga")
    olga = whoami(api, owner)
    user_token("pete")
    api.ok("POST", "/v1/workspaces", {"name": "ws", "description": "team space"}, token=owner)
    api.ok("POST", "/v1/workspaces/ws/members", {"user": "pete", "role": "reader"}, token=owner)
    api.ok("POST", "/v1/workspaces/ws/members", {"user": "pete", "role": "contributor"}, token=owner)
    ci = api.ok("POST", "/v1/users/olga/tokens", {"name": "ci", "workspace": "ws", "role": "contributor",
                                                   "expires_in": 3600}, token=owner)
    api.ok("DELETE", f"/v1/users/olga/tokens/{ci['token_id']}", token=owner)
    api.ok("DELETE", "/v1/workspaces/ws/members/pete", token=owner)

    # Then the log holds each change, in order, naming the actor and the token it used
    log = entries(api, token=owner)
    assert [(e["action"], e["target"]) for e in log] == [
        ("workspace.created", "ws"), ("member.added", "pete"), ("member.role_changed", "pete"),
        ("token.created", ci["token_id"]), ("token.revoked", ci["token_id"]), ("member.removed", "pete")]
    assert {(e["actor"], e["actor_token_id"]) for e in log} == {("olga", olga["token_id"])}
    assert log[0]["details"] == {"description": "team space"}
    assert log[2]["details"] == {"from": "reader", "to": "contributor"}
    assert log[3]["details"] == {"name": "ci", "user": "olga", "role": "contributor", "expires": ci["expires"]}
    assert [e["id"] for e in log] == sorted(e["id"] for e in log)
    assert [e["at"] for e in log] == sorted(e["at"] for e in log)
    assert "nmb_" not in json.dumps(log)


def test_a_scoped_tokens_changes_name_that_token(api, user_token):
    owner = user_token("olga")
    api.ok("POST", "/v1/workspaces", {"name": "ws"}, token=owner)
    user_token("pete")
    scoped = api.ok("POST", "/v1/users/olga/tokens", {"workspace": "ws"}, token=owner)
    api.ok("POST", "/v1/workspaces/ws/members", {"user": "pete", "role": "reader"}, token=scoped["token"])
    last = entries(api, token=owner)[-1]
    assert (last["action"], last["actor"], last["actor_token_id"]) == ("member.added", "olga", scoped["token_id"])


def test_only_owners_and_admins_read_the_log(api, user_token):
    owner, reader, contributor, stranger = (user_token(n) for n in ("olga", "rita", "carl", "sam"))
    api.ok("POST", "/v1/workspaces", {"name": "ws"}, token=owner)
    api.ok("POST", "/v1/workspaces/ws/members", {"user": "rita", "role": "reader"}, token=owner)
    api.ok("POST", "/v1/workspaces/ws/members", {"user": "carl", "role": "contributor"}, token=owner)
    for token in (reader, contributor):
        status, body = api.call("GET", AUDIT, token=token)
        assert (status, body["code"]) == (403, "Forbidden"), body
    assert api.call("GET", AUDIT, token=stranger)[0] == 404  # the workspace's existence stays private
    assert len(entries(api, token=owner)) == 3
    assert len(entries(api)) == 3  # the admin, not a member
    # an owner's token capped below owner does not read it
    capped = api.ok("POST", "/v1/users/olga/tokens", {"workspace": "ws", "role": "contributor"}, token=owner)
    assert api.call("GET", AUDIT, token=capped["token"])[0] == 403


def test_no_route_changes_the_log(api, services):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    before = entries(api)
    # The one route on it reads
    assert [(s.path, s.methods) for s in ROUTES if "audit" in s.path] == [("/v1/workspaces/{workspace}/audit",
                                                                          ("GET",))]
    entry_id = before[0]["id"]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in (AUDIT, f"{AUDIT}/{entry_id}"):
            status, _ = api.call(method, path, {"action": "workspace.deleted"})
            assert status in (403, 404, 405), (method, path, status)
    assert entries(api) == before


def test_the_log_is_paged_newest_first_and_filtered_by_action(api, user_token):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    for n in range(5):
        user_token(f"u{n}")
        api.ok("POST", "/v1/workspaces/ws/members", {"user": f"u{n}", "role": "reader"})
    page = api.ok("GET", f"{AUDIT}?max_results=2")
    assert [e["target"] for e in page["entries"]] == ["u4", "u3"]
    rest = api.ok("GET", f"{AUDIT}?max_results=10&page_token={page['next_page_token']}")
    assert [e["target"] for e in rest["entries"]] == ["u2", "u1", "u0", "ws"] and rest["next_page_token"] is None
    only = api.ok("GET", f"{AUDIT}?action=workspace.created")
    assert [e["action"] for e in only["entries"]] == ["workspace.created"]
    filtered = api.ok("GET", f"{AUDIT}?action=member.added&max_results=3")
    assert [e["target"] for e in filtered["entries"]] == ["u4", "u3", "u2"]
    following = api.ok("GET", f"{AUDIT}?action=member.added&max_results=3&page_token={filtered['next_page_token']}")
    assert [e["target"] for e in following["entries"]] == ["u1", "u0"]
    for query, field in [("action=member.deleted", "action"), ("max_results=0", "max_results"),
                         ("page_token=nope!", "page_token")]:
        status, body = api.call("GET", f"{AUDIT}?{query}")
        assert (status, body.get("field")) == (400, field), (query, body)


def test_a_page_token_of_another_workspace_is_refused(api):
    for name in ("ws", "ws2"):
        api.ok("POST", "/v1/workspaces", {"name": name})
        api.ok("POST", f"/v1/workspaces/{name}/members", {"user": "admin", "role": "owner"})
    token = api.ok("GET", f"{AUDIT}?max_results=1")["next_page_token"]
    status, body = api.call("GET", f"/v1/workspaces/ws2/audit?page_token={token}")
    assert (status, body["field"]) == (400, "page_token")


def test_a_deleted_workspace_keeps_its_log_and_a_new_one_of_its_name_starts_afresh(api, services):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    old_id = services.workspaces.record("ws")["id"]
    api.ok("DELETE", "/v1/workspaces/ws")
    kept = list(services.ctx.table.query_all(Query(table_keys.audit_log_pk("ws", old_id))))
    assert [e["action"] for e in kept] == ["workspace.created", "workspace.deleted"]
    assert kept[1]["actor"] == "admin" and kept[1]["details"] == {"force": False}

    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    assert [e["action"] for e in entries(api)] == ["workspace.created"]


def test_compute_environment_and_model_changes_are_recorded(api, backend, services):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    api.ok("POST", "/v1/workspaces/ws/computes", {"name": "box", "type": "instance"}, status=201)
    api.ok("DELETE", "/v1/workspaces/ws/computes/box")
    api.ok("POST", "/v1/workspaces/ws/environments/env/versions", {"python": "3.11", "pip": ["numpy"]})
    api.ok("PUT", "/v1/workspaces/ws/environments/env/versions/1", {"python": "3.11", "pip": ["scipy"]})
    register(api, backend, services, "m", {"w.json": b"{}"})
    api.ok("DELETE", "/v1/workspaces/ws/models/m/versions/1")
    assert [(e["action"], e["target"]) for e in entries(api)][1:] == [
        ("compute.created", "box"), ("compute.deleted", "box"),
        ("environment_version.created", "env:1"), ("environment_version.replaced", "env:1"),
        ("model_version.registered", "m:1"), ("model_version.deleted", "m:1")]


def test_a_change_refused_leaves_no_entry(api, user_token):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    # the last owner cannot leave: the transaction that would record it fails as a whole
    assert api.call("DELETE", "/v1/workspaces/ws/members/admin")[0] == 409
    api.ok("POST", "/v1/workspaces/ws/computes", {"name": "box", "type": "instance"}, status=201)
    assert api.call("POST", "/v1/workspaces/ws/computes", {"name": "box", "type": "instance"})[0] == 409
    assert [e["action"] for e in entries(api)] == ["workspace.created", "compute.created"]


def test_deployment_traffic_key_and_endpoint_changes_are_recorded_without_secrets(api, backend, hosted):
    deploy(api, backend, hosted, "blue")
    deploy(api, backend, hosted, "green", model="doubler:2")
    deploy(api, backend, hosted, "green", model="doubler:1")
    api.ok("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": {"blue": 60, "green": 40}})
    keys = api.ok("POST", f"{ENDPOINTS}/calc/keys/regenerate", {"key": "secondary"})
    api.ok("PUT", f"{ENDPOINTS}/calc/traffic", {"traffic": {"blue": 100, "green": 0}})
    api.ok("DELETE", f"{ENDPOINTS}/calc/deployments/green")
    api.ok("DELETE", f"{ENDPOINTS}/calc")

    log = [e for e in entries(api) if not e["action"].startswith(("workspace.", "model_version."))]
    assert [(e["action"], e["target"]) for e in log] == [
        ("deployment.created", "calc/blue"), ("deployment.created", "calc/green"), ("deployment.updated", "calc/green"),
        ("endpoint.traffic_changed", "calc"), ("endpoint.keys_regenerated", "calc"),
        ("endpoint.traffic_changed", "calc"), ("deployment.deleted", "calc/green"), ("endpoint.deleted", "calc")]
    assert log[2]["details"]["models"] == ["doubler:1"] and log[2]["details"]["revision"] == 2
    assert log[3]["details"] == {"from": {"blue": 100, "green": 0}, "to": {"blue": 60, "green": 40}}
    assert log[4]["details"] == {"which": "secondary"}
    assert log[7]["details"] == {"deployments": ["blue"]}
    admin = whoami(api)
    assert {(e["actor"], e["actor_token_id"]) for e in log} == {("admin", admin["token_id"])}
    dump = json.dumps(entries(api))
    assert keys["primary_key"] not in dump and keys["secondary_key"] not in dump
