"""Authentication, users and API tokens, through the HTTP API on both backends."""
from __future__ import annotations

import json
import sqlite3

import pytest

WELL_FORMED_UNKNOWN = "nmb_" + "A" * 43


def every_item(table) -> list[dict]:
    """Every raw item of the table, whatever the adapter (the Table port has no scan)."""
    if hasattr(table, "client"):  # DynamoDB
        items, start = [], None
        while True:
            args = {"TableName": table.table_name, **({"ExclusiveStartKey": start} if start else {})}
            page = table.client.scan(**args)
            items += page["Items"]
            start = page.get("LastEvaluatedKey")
            if not start:
                return items
    with sqlite3.connect(table.path) as db:
        return [{"pk": pk, "sk": sk, "data": data} for pk, sk, data in db.execute("SELECT pk, sk, data FROM items")]


# --- authentication ---------------------------------------------------------------------------------
def test_no_token_is_401(api):
    for method, path in [("GET", "/v1/whoami"), ("GET", "/v1/workspaces"), ("GET", "/v1/users"),
                         ("POST", "/v1/workspaces"), ("GET", "/v1/workspaces/ws/runs/abc")]:
        status, body = api.call(method, path, token=None)
        assert status == 401, (path, body)
        assert body["code"] == "Unauthorized"


MALFORMED = [
    "",
    "Bearer",
    "Bearer ",
    "Bearer nmb_short",
    "Bearer abc",
    "Bearer " + "nmb_" + "A" * 44,
    "Bearer " + "nmb_" + "A" * 42 + "!",
    "Basic dXNlcjpwYXNz",
    "nmb_" + "A" * 43,
    "Token " + "nmb_" + "A" * 43,
]


def test_malformed_token_is_401(api):
    for header in MALFORMED:
        status, body = api.call("GET", "/v1/whoami", token=None, headers={"Authorization": header})
        assert status == 401, (header, body)
        assert body["code"] == "Unauthorized"
    # a real token in a mangled header does not pass either
    for header in [f"Basic {api.token}", f"Bearer {api.token}x", f"Bearer {api.token[:-1]}"]:
        assert api.call("GET", "/v1/whoami", token=None, headers={"Authorization": header})[0] == 401


def test_well_formed_but_unknown_token_is_401(api):
    status, body = api.call("GET", "/v1/whoami", token=WELL_FORMED_UNKNOWN)
    assert status == 401
    assert body["code"] == "Unauthorized"


def test_scheme_is_case_insensitive(api):
    status, body = api.call("GET", "/v1/whoami", token=None, headers={"Authorization": f"bearer {api.token}"})
    assert status == 200
    assert body["user"] == "admin"


def test_whoami_names_the_caller(api, user_token):
    assert api.ok("GET", "/v1/whoami")["is_admin"] is True
    me = api.ok("GET", "/v1/whoami", token=user_token("alice"))
    assert me["user"] == "alice"
    assert me["is_admin"] is False
    assert me["token_id"]


def test_revoked_token_is_401(api):
    # Given a user with two tokens
    api.ok("POST", "/v1/users", {"name": "bob"})
    first = api.ok("POST", "/v1/users/bob/tokens", {"name": "laptop"})
    second = api.ok("POST", "/v1/users/bob/tokens", {"name": "ci"})
    assert api.ok("GET", "/v1/whoami", token=first["token"])["token_id"] == first["token_id"]

    # When the first is revoked
    revoked = api.ok("DELETE", f"/v1/users/bob/tokens/{first['token_id']}")
    assert revoked == {"revoked": first["token_id"]}

    # Then only the first stops working
    status, body = api.call("GET", "/v1/whoami", token=first["token"])
    assert status == 401 and body["code"] == "Unauthorized"
    assert api.ok("GET", "/v1/whoami", token=second["token"])["user"] == "bob"
    listed = api.ok("GET", "/v1/users/bob/tokens", token=second["token"])["tokens"]
    assert [t["token_id"] for t in listed] == [second["token_id"]]


def test_user_can_revoke_own_token(api, user_token):
    token = user_token("carol")
    me = api.ok("GET", "/v1/whoami", token=token)
    api.ok("DELETE", f"/v1/users/carol/tokens/{me['token_id']}", token=token)
    assert api.call("GET", "/v1/whoami", token=token)[0] == 401


def test_revoking_unknown_token_is_404(api):
    api.ok("POST", "/v1/users", {"name": "dan"})
    status, body = api.call("DELETE", "/v1/users/dan/tokens/0123456789abcdef")
    assert status == 404
    assert body["code"] == "NotFound"


def test_cannot_revoke_another_users_token(api, user_token):
    alice = user_token("alice")
    bob = user_token("bob")
    bob_id = api.ok("GET", "/v1/whoami", token=bob)["token_id"]
    assert api.call("DELETE", f"/v1/users/bob/tokens/{bob_id}", token=alice)[0] == 403
    assert api.ok("GET", "/v1/whoami", token=bob)["user"] == "bob"


# --- users ------------------------------------------------------------------------------------------
def test_admin_creates_users_and_tokens(api):
    # When the admin creates a user and a token for them
    user = api.ok("POST", "/v1/users", {"name": "erin"}, status=201)
    assert user["name"] == "erin" and user["is_admin"] is False and user["created"]
    token = api.ok("POST", "/v1/users/erin/tokens", {"name": "notebook"}, status=201)

    # Then the token authenticates as that user
    assert token["token"].startswith("nmb_")
    assert token["user"] == "erin" and token["name"] == "notebook"
    assert api.ok("GET", "/v1/whoami", token=token["token"])["user"] == "erin"
    names = [u["name"] for u in api.ok("GET", "/v1/users")["users"]]
    assert sorted(names) == ["admin", "erin"]


def test_admin_can_create_another_admin(api):
    api.ok("POST", "/v1/users", {"name": "root2", "is_admin": True})
    token = api.ok("POST", "/v1/users/root2/tokens", {})["token"]
    assert api.ok("GET", "/v1/whoami", token=token)["is_admin"] is True
    api.ok("POST", "/v1/users", {"name": "made-by-root2"}, token=token)


def test_non_admin_cannot_manage_users(api, user_token):
    token = user_token("frank")
    status, body = api.call("POST", "/v1/users", {"name": "mallory"}, token=token)
    assert status == 403 and body["code"] == "Forbidden"
    assert api.call("POST", "/v1/users", {"name": "mallory", "is_admin": True}, token=token)[0] == 403
    assert api.call("GET", "/v1/users", token=token)[0] == 403
    assert api.call("POST", "/v1/users/admin/tokens", {}, token=token)[0] == 403
    assert api.call("GET", "/v1/users/admin/tokens", token=token)[0] == 403
    # nothing was created
    assert "mallory" not in [u["name"] for u in api.ok("GET", "/v1/users")["users"]]


def test_user_creates_and_lists_own_tokens(api, user_token):
    token = user_token("gina")
    extra = api.ok("POST", "/v1/users/gina/tokens", {"name": "second"}, token=token, status=201)
    assert api.ok("GET", "/v1/whoami", token=extra["token"])["user"] == "gina"
    listed = api.ok("GET", "/v1/users/gina/tokens", token=token)["tokens"]
    assert sorted(t["name"] for t in listed) == ["default", "second"]


def test_duplicate_user_is_409(api):
    api.ok("POST", "/v1/users", {"name": "hank"})
    status, body = api.call("POST", "/v1/users", {"name": "hank"})
    assert status == 409
    assert body["field"] == "name"


def test_invalid_user_name_is_400(api):
    for name in ["", "Upper", "-dash", "has space", "a" * 65, "ünï", "a/b"]:
        status, body = api.call("POST", "/v1/users", {"name": name})
        assert status == 400, (name, body)
        assert body["field"] == "name"
    assert [u["name"] for u in api.ok("GET", "/v1/users")["users"]] == ["admin"]


def test_token_for_unknown_user_is_404(api):
    status, body = api.call("POST", "/v1/users/nobody/tokens", {})
    assert status == 404


# --- secrets ----------------------------------------------------------------------------------------
def test_token_secret_is_returned_once_and_never_listed(api, user_token):
    # Given a few tokens
    api.ok("POST", "/v1/users", {"name": "ivy"})
    created = [api.ok("POST", "/v1/users/ivy/tokens", {"name": f"t{i}"}) for i in range(3)]
    assert all(c["token"].startswith("nmb_") for c in created)

    # Then no listing ever shows a secret
    listings = [
        api.ok("GET", "/v1/users/ivy/tokens"),
        api.ok("GET", "/v1/users/admin/tokens"),
        api.ok("GET", "/v1/users"),
        api.ok("GET", "/v1/users/ivy/tokens", token=created[0]["token"]),
        api.ok("GET", "/v1/whoami", token=created[1]["token"]),
    ]
    for listing in listings:
        assert "nmb_" not in json.dumps(listing)
    assert {t["token_id"] for t in listings[0]["tokens"]} == {c["token_id"] for c in created}
    assert all(set(t) == {"token_id", "user", "name", "created", "expires", "workspace", "role", "last_used"}
               for t in listings[0]["tokens"])


def test_tokens_are_stored_only_as_hashes(api, services):
    import hashlib

    api.ok("POST", "/v1/users", {"name": "jack"})
    secrets = [api.ok("POST", "/v1/users/jack/tokens", {"name": f"t{i}"})["token"] for i in range(2)]
    secrets.append(api.token)

    dump = json.dumps(every_item(services.ctx.table))
    for secret in secrets:
        assert secret not in dump
        assert secret[len("nmb_"):] not in dump
        assert hashlib.sha256(secret.encode()).hexdigest() in dump


@pytest.mark.parametrize("method, headers, refused_with", [
    ("POST", {"Content-Type": "text/plain"}, 415),  # a content type the route does not take
    ("PATCH", {"Content-Type": "application/json"}, 405),  # a method it does not take
])
def test_a_caller_without_a_token_learns_nothing_of_a_route_from_its_content_type_or_method(api, method, headers,
                                                                                               refused_with):
    path = "/v1/workspaces"
    call = getattr(api.client.http, method.lower())
    anonymous = call(path, body="{}", headers=headers)
    assert anonymous.status_code == 401 and json.loads(anonymous.body)["code"] == "Unauthorized"
    known = call(path, body="{}", headers={**headers, "Authorization": f"Bearer {api.token}"})
    assert known.status_code == refused_with
