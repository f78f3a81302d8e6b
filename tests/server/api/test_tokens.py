"""API tokens: expiry, a scope of one workspace with a capped role, listing and revocation, on both backends."""
from __future__ import annotations

import json
import re

import pytest

from chalicelib.api.routing import ROUTES, TOKEN

DAY = 86400


@pytest.fixture
def team(api, user_token):
    """`carol` owns `ws` and `other`; her unscoped token is returned."""
    carol = user_token("carol")
    for name in ("ws", "other"):
        api.ok("POST", "/v1/workspaces", {"name": name}, token=carol)
    return carol


def mint(api, token, **body) -> dict:
    return api.ok("POST", "/v1/users/carol/tokens", {"name": "ci", **body}, token=token, status=201)


def later(services, seconds: float) -> None:
    """Moves the services' clock on by `seconds`."""
    clock = services.ctx.clock
    services.ctx.clock = lambda: clock() + seconds


# --- expiry -----------------------------------------------------------------------------------------
def test_an_expiring_token_works_until_it_expires_then_is_refused_saying_so(api, services, team):
    # Given a token that expires in an hour, and one that never does
    expiring = mint(api, team, expires_in=3600)
    assert expiring["expires"] and expiring["workspace"] is None
    assert api.ok("GET", "/v1/whoami", token=expiring["token"])["user"] == "carol"

    # When the hour has passed
    later(services, 3601)

    # Then it is refused with 401 saying it expired; the other still works
    status, body = api.call("GET", "/v1/workspaces", token=expiring["token"])
    assert status == 401 and body["code"] == "Unauthorized"
    assert "expired" in body["message"] and expiring["expires"] in body["message"]
    assert api.ok("GET", "/v1/whoami", token=team)["user"] == "carol"


def test_a_token_without_expiry_keeps_working(api, services, team):
    never = mint(api, team)
    assert never["expires"] is None
    later(services, 20 * 365 * DAY)
    assert api.ok("GET", "/v1/whoami", token=never["token"])["user"] == "carol"


@pytest.mark.parametrize("expires_in", [0, -5, 59, 10 * 365 * DAY + 1, "3600", 1.5, True])
def test_a_bad_expiry_is_refused_naming_the_field(api, team, expires_in):
    status, body = api.call("POST", "/v1/users/carol/tokens", {"expires_in": expires_in}, token=team)
    assert (status, body["field"]) == (400, "expires_in"), body
    assert [t["name"] for t in api.ok("GET", "/v1/users/carol/tokens", token=team)["tokens"]] == ["default"]


# --- scope ------------------------------------------------------------------------------------------
def test_a_contributor_scoped_token_submits_and_reads_in_its_workspace_only(api, team):
    # Given a CI token: contributor on `ws`, though carol owns both workspaces
    ci = mint(api, team, workspace="ws", role="contributor")
    assert (ci["workspace"], ci["role"]) == ("ws", "contributor")
    token = ci["token"]

    # It creates runs and reads in `ws`
    run = api.ok("POST", "/v1/workspaces/ws/runs", {"experiment": "nightly"}, token=token, status=201)
    assert api.ok("GET", f"/v1/workspaces/ws/runs/{run['id']}", token=token)["id"] == run["id"]
    assert api.ok("GET", "/v1/workspaces/ws", token=token)["role"] == "contributor"

    # but does nothing an owner does there
    for method, path, body in [("POST", "/v1/workspaces/ws/members", {"user": "admin", "role": "reader"}),
                               ("DELETE", "/v1/workspaces/ws", None), ("GET", "/v1/workspaces/ws/audit", None)]:
        status, answer = api.call(method, path, body, token=token)
        assert status == 403 and "capped at contributor" in answer["message"], (path, answer)

    # nor may it make carol leave the workspace
    assert api.call("DELETE", "/v1/workspaces/ws/members/carol", token=token)[0] == 403

    # and nothing at all in `other`, which carol owns
    for method, path, body in [("GET", "/v1/workspaces/other", None),
                               ("POST", "/v1/workspaces/other/runs", {"experiment": "x"}),
                               ("DELETE", "/v1/workspaces/other/members/carol", None)]:
        status, answer = api.call(method, path, body, token=token)
        assert status == 403 and "scoped to workspace 'ws'" in answer["message"], (path, answer)
    assert [m["user"] for m in api.ok("GET", "/v1/workspaces/other/members", token=team)["members"]] == ["carol"]

    # Listing workspaces shows its one workspace, with the capped role
    assert api.ok("GET", "/v1/workspaces", token=token)["workspaces"] == [{"name": "ws", "role": "contributor"}]
    me = api.ok("GET", "/v1/whoami", token=token)
    assert (me["user"], me["workspace"], me["role"], me["is_admin"]) == ("carol", "ws", "contributor", False)


def test_the_effective_role_is_the_lower_of_membership_and_ceiling(api, team, user_token):
    user_token("dave")
    api.ok("POST", "/v1/workspaces/ws/members", {"user": "dave", "role": "reader"}, token=team)
    capped_high = api.ok("POST", "/v1/users/dave/tokens", {"workspace": "ws", "role": "owner"}, status=201)["token"]
    # a reader stays a reader whatever the token's ceiling
    assert api.ok("GET", "/v1/workspaces/ws", token=capped_high)["role"] == "reader"
    status, _ = api.call("POST", "/v1/workspaces/ws/runs", {"experiment": "x"}, token=capped_high)
    assert status == 403
    # and a reader-capped token of an owner reads only
    reader = mint(api, team, workspace="ws", role="reader")["token"]
    assert api.ok("GET", "/v1/workspaces/ws/members", token=reader)["members"]
    assert api.call("POST", "/v1/workspaces/ws/runs", {"experiment": "x"}, token=reader)[0] == 403


def test_a_scoped_token_without_a_role_is_capped_by_the_membership_only(api, team):
    token = mint(api, team, workspace="ws")
    assert token["role"] == "owner"
    assert api.ok("GET", "/v1/workspaces/ws/audit", token=token["token"])["entries"]
    assert api.call("GET", "/v1/workspaces/other", token=token["token"])[0] == 403


def path_of(spec, workspace: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: workspace if m.group(1) == "workspace" else "x", spec.path)


def test_a_scoped_token_reaches_no_user_level_route_and_no_other_workspace(api, services, team):
    # Given an admin's owner-scoped token (the admin owns `adminws`, and is made owner of `other` too)
    api.ok("POST", "/v1/workspaces", {"name": "adminws"})
    scoped = api.ok("POST", "/v1/users/admin/tokens", {"workspace": "adminws"}, status=201)["token"]
    api.ok("POST", "/v1/workspaces/other/members", {"user": "admin", "role": "owner"}, token=team)
    before = json.dumps(api.ok("GET", "/v1/users")) + json.dumps(api.ok("GET", "/v1/workspaces"))

    # Then every route without a workspace, save the two declared for scoped tokens, and every route of
    # another workspace, is refused with 403 before anything runs
    assert {(s.path, s.methods) for s in ROUTES if s.scoped_token} == {("/v1/whoami", ("GET",)),
                                                                      ("/v1/workspaces", ("GET",))}
    checked = 0
    for spec in ROUTES:
        if spec.callers != TOKEN or spec.scoped_token:
            continue
        for method in spec.methods:
            status, body = api.call(method, path_of(spec, "other"), {}, token=scoped)
            assert status == 403, (method, spec.path, body)
            checked += 1
    assert checked > 60
    assert json.dumps(api.ok("GET", "/v1/users")) + json.dumps(api.ok("GET", "/v1/workspaces")) == before
    # and the admin's rights do not come with a scoped token
    assert api.ok("GET", "/v1/whoami", token=scoped)["is_admin"] is False


def test_scoping_is_checked_when_the_token_is_made(api, team, user_token):
    eve = user_token("eve")
    cases = [({"role": "reader"}, 400, "role"),  # a ceiling needs a workspace
             ({"workspace": "ws", "role": "admin"}, 400, "role"),
             ({"workspace": "Bad Name"}, 400, "workspace"),
             ({"workspace": "nowhere"}, 404, "workspace")]
    for body, status, field in cases:
        code, answer = api.call("POST", "/v1/users/carol/tokens", body, token=team)
        assert (code, answer.get("field")) == (status, field), (body, answer)
    # a workspace its user is not a member of cannot be named, whoever asks
    assert api.call("POST", "/v1/users/eve/tokens", {"workspace": "ws"}, token=eve)[1]["field"] == "workspace"
    assert api.call("POST", "/v1/users/eve/tokens", {"workspace": "ws"})[0] == 404


def test_a_scoped_token_mints_no_token_at_all(api, team):
    ci = mint(api, team, workspace="ws", role="contributor")["token"]
    for body in [{}, {"workspace": "ws", "role": "owner"}, {"workspace": "ws", "role": "reader"}]:
        status, answer = api.call("POST", "/v1/users/carol/tokens", body, token=ci)
        assert status == 403, answer
    assert len(api.ok("GET", "/v1/users/carol/tokens", token=team)["tokens"]) == 2


# --- list and revoke --------------------------------------------------------------------------------
def test_tokens_are_listed_with_their_scope_and_expiry_never_their_secret(api, services, team):
    ci = mint(api, team, workspace="ws", role="contributor", expires_in=30 * DAY)
    api.ok("GET", "/v1/whoami", token=ci["token"])
    listed = {t["token_id"]: t for t in api.ok("GET", "/v1/users/carol/tokens", token=team)["tokens"]}
    assert set(listed[ci["token_id"]]) == {"token_id", "user", "name", "created", "expires", "workspace", "role",
                                           "last_used"}
    entry = listed[ci["token_id"]]
    assert (entry["workspace"], entry["role"], entry["expires"]) == ("ws", "contributor", ci["expires"])
    assert entry["last_used"] is not None
    assert "nmb_" not in json.dumps(listed)


def test_last_used_is_refreshed_at_most_hourly(api, services, team):
    ci = mint(api, team)
    first = api.ok("GET", "/v1/whoami", token=ci["token"]) and services.ctx.table.writes
    api.ok("GET", "/v1/whoami", token=ci["token"])
    assert services.ctx.table.writes == first  # the second use within the hour writes nothing
    later(services, 3601)
    api.ok("GET", "/v1/whoami", token=ci["token"])
    assert services.ctx.table.writes == first + 1


def test_a_revoked_token_is_refused_at_once(api, team):
    ci = mint(api, team, workspace="ws", role="contributor")
    assert api.ok("GET", "/v1/workspaces/ws", token=ci["token"])["name"] == "ws"
    api.ok("DELETE", f"/v1/users/carol/tokens/{ci['token_id']}", token=team)
    # the very next request, on either backend: nothing caches a token
    status, body = api.call("GET", "/v1/workspaces/ws", token=ci["token"])
    assert (status, body["code"]) == (401, "Unauthorized")
    assert api.call("DELETE", f"/v1/users/carol/tokens/{ci['token_id']}", token=team)[0] == 404
