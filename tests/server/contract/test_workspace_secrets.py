"""Workspace secrets over both backends: Secrets Manager (moto) + DynamoDB, encrypted files + SQLite."""
from __future__ import annotations

import pytest

from chalicelib.errors import Invalid, NotFound
from chalicelib.services.identity import Principal
from chalicelib.services.workspace_secrets import store_name
from chalicelib.wiring import build_services
from tests.server.api.helpers import all_at_once

VALUE = "p@ss-wörd-" + "x" * 30
ALICE, BOB = Principal(user="alice", is_admin=False, token_id="t1"), Principal(user="bob", is_admin=False, token_id="t2")


@pytest.fixture
def services(settings):
    built = build_services(settings)
    built.identity.create_user("alice")
    for name in ("ws", "other"):
        built.workspaces.create(ALICE, name)
    return built


def test_set_read_list_and_replace(services):
    secrets = services.workspace_secrets
    first = secrets.set(ALICE, "ws", "db-password", VALUE)
    assert first["name"] == "db-password" and first["version"] == 1 and first["created_by"] == "alice"
    assert "value" not in first and VALUE not in repr(first)
    assert secrets.read("ws", "db-password") == VALUE

    again = secrets.set(BOB, "ws", "db-password", "second")
    assert secrets.read("ws", "db-password") == "second"
    assert again["version"] == 2 and again["created"] == first["created"] and again["created_by"] == "alice"
    assert again["updated_by"] == "bob"
    listed = secrets.list("ws")["secrets"]
    assert [s["name"] for s in listed] == ["db-password"] and listed[0] == again


def test_listing_reads_no_value(services, monkeypatch):
    services.workspace_secrets.set(ALICE, "ws", "a", "1")
    services.workspace_secrets.set(ALICE, "ws", "b", "2")

    def refuse(name):
        raise AssertionError(f"listing read the value of {name}")

    monkeypatch.setattr(services.secrets, "get", refuse)
    assert [s["name"] for s in services.workspace_secrets.list("ws")["secrets"]] == ["a", "b"]


def test_workspaces_and_endpoint_keys_have_their_own_namespaces(services):
    secrets = services.workspace_secrets
    secrets.set(ALICE, "ws", "token", "mine")
    secrets.set(ALICE, "other", "token", "theirs")
    services.secrets.put("endpoint-keys/ws/token", "an endpoint's keys")
    assert secrets.read("ws", "token") == "mine" and secrets.read("other", "token") == "theirs"
    assert services.secrets.get(store_name("ws", "token")) == "mine"
    assert [s["name"] for s in secrets.list("other")["secrets"]] == ["token"]
    secrets.delete("other", "token")
    assert secrets.read("ws", "token") == "mine"
    assert services.secrets.get("endpoint-keys/ws/token") == "an endpoint's keys"


def test_delete_removes_value_and_item(services):
    secrets = services.workspace_secrets
    secrets.set(ALICE, "ws", "api-key", VALUE)
    assert secrets.delete("ws", "api-key") == {"name": "api-key", "deleted": True}
    assert secrets.list("ws")["secrets"] == []
    with pytest.raises(NotFound):
        secrets.read("ws", "api-key")
    with pytest.raises(NotFound):
        services.secrets.get(store_name("ws", "api-key"))
    with pytest.raises(NotFound):
        secrets.delete("ws", "api-key")


def test_deleting_again_removes_a_value_left_behind(services):
    # Given a delete that removed the item but failed before the value
    services.workspace_secrets.set(ALICE, "ws", "half", VALUE)
    services.ctx.table.delete("WS#ws", "SECRET#half")
    # When it is deleted again, the leftover value goes (and the caller learns there was no secret)
    with pytest.raises(NotFound):
        services.workspace_secrets.delete("ws", "half")
    with pytest.raises(NotFound):
        services.secrets.get(store_name("ws", "half"))


def test_a_value_without_its_item_cannot_be_read(services):
    services.secrets.put(store_name("ws", "orphan"), VALUE)  # a set that failed after writing the value
    with pytest.raises(NotFound):
        services.workspace_secrets.read("ws", "orphan")
    assert services.workspace_secrets.list("ws")["secrets"] == []


def test_an_item_without_its_value_reads_as_not_found(services):
    services.workspace_secrets.set(ALICE, "ws", "gone", VALUE)
    services.secrets.delete(store_name("ws", "gone"))
    with pytest.raises(NotFound, match="has no value"):
        services.workspace_secrets.read("ws", "gone")


@pytest.mark.parametrize("name", ["", "-lead", "has space", "a/b", "a#b", "x" * 128, "dot.ted", "under_score"])
def test_bad_names_are_refused_naming_the_field(services, name):
    with pytest.raises(Invalid) as refused:
        services.workspace_secrets.set(ALICE, "ws", name, VALUE)
    assert refused.value.field == "name"


def test_bad_values_are_refused_without_echoing_them(services):
    with pytest.raises(Invalid) as refused:
        services.workspace_secrets.set(ALICE, "ws", "big", VALUE * 2000)
    assert refused.value.field == "value" and VALUE not in str(refused.value)
    assert services.workspace_secrets.list("ws")["secrets"] == []


def test_unknown_workspace_is_not_found(services):
    with pytest.raises(NotFound):
        services.workspace_secrets.set(ALICE, "nowhere", "a", VALUE)


def test_delete_all_removes_every_value(services):
    for name in ("a", "b", "c"):
        services.workspace_secrets.set(ALICE, "ws", name, VALUE)
    services.workspace_secrets.set(ALICE, "other", "a", "kept")
    assert services.workspace_secrets.delete_all("ws") == 3
    assert services.workspace_secrets.list("ws")["secrets"] == []
    for name in ("a", "b", "c"):
        with pytest.raises(NotFound):
            services.secrets.get(store_name("ws", name))
    assert services.workspace_secrets.read("other", "a") == "kept"


def test_concurrent_sets_count_every_version(services):
    values = [f"value-{n}" for n in range(6)]
    errors = all_at_once(lambda n: services.workspace_secrets.set(ALICE, "ws", "raced", values[n]), len(values))
    assert errors == []
    listed = services.workspace_secrets.list("ws")["secrets"]
    assert [(s["name"], s["version"]) for s in listed] == [("raced", 6)]
    assert services.workspace_secrets.read("ws", "raced") in values
