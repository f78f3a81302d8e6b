"""Datastores over both backends: registered against a second S3 (moto's server, with IAM auth) by endpoint_url,
against the platform's own S3 (moto in-process) on AWS, and local folders under the platform's roots."""
from __future__ import annotations

import dataclasses

import pytest

from chalicelib.errors import Conflict, Forbidden, Invalid, NotFound
from chalicelib.services.identity import Principal
from chalicelib.wiring import build_services
from tests.server.api.helpers import all_at_once

ALICE = Principal(user="alice", is_admin=False, token_id="t1")
ADMIN = Principal(user="admin", is_admin=True, token_id="t0")


@pytest.fixture
def services(settings, tmp_path):
    roots = (str(tmp_path / "shared"),)
    (tmp_path / "shared" / "images").mkdir(parents=True)
    built = build_services(dataclasses.replace(settings, datastore_roots=roots))
    for name in ("alice", "admin"):
        built.identity.create_user(name, is_admin=name == "admin")
    built.workspaces.create(ALICE, "ws")
    built.workspaces.add_member(ALICE, "ws", "admin", "contributor")
    return built


def s3_settings(store, **extra) -> dict:
    return {"bucket": store.bucket, "prefix": "projects/iris", "endpoint_url": store.url, **extra}


def secret_values(services) -> list[str]:
    """Every value the workspace's secret store holds, read the way only the platform can."""
    return [services.workspace_secrets.read("ws", s["name"]) for s in services.workspace_secrets.list("ws")["secrets"]]


def test_every_workspace_has_its_blob_datastore_as_default(services):
    listed = services.datastores.list("ws")
    assert [(d["name"], d["type"], d["is_default"]) for d in listed] == [("workspaceblobstore", "blob", True)]
    assert services.datastores.default("ws")["name"] == "workspaceblobstore"
    with pytest.raises(NotFound) as missing:
        services.datastores.list("nope")
    assert "nope" in missing.value.message


def test_an_s3_compatible_datastore_keeps_its_keys_in_the_secret_store_only(services, s3_compatible):
    shown = services.datastores.register(ALICE, "ws", "research", "s3", s3_settings(s3_compatible),
                                         s3_compatible.keys, description="shared data")
    assert shown["credential"] == "access_key" and shown["type"] == "s3" and not shown["is_default"]
    assert shown["settings"] == {"bucket": s3_compatible.bucket, "prefix": "projects/iris", "region": "us-east-1",
                                 "endpoint_url": s3_compatible.url}
    for view in (shown, services.datastores.get("ws", "research"), *services.datastores.list("ws")):
        assert s3_compatible.secret_access_key not in repr(view) and s3_compatible.access_key_id not in repr(view)
    # The item names the secrets; the values are there, and the platform reads them back for its own use.
    item = services.datastores.record("ws", "research")
    assert set(item["credential_secrets"]) == {"access_key_id", "secret_access_key"}
    assert s3_compatible.secret_access_key not in repr(item)
    assert services.datastores.credentials("ws", item) == s3_compatible.keys
    assert sorted(secret_values(services)) == sorted(s3_compatible.keys.values())


@pytest.mark.parametrize("change, field, code", [
    ({"bucket": "no-such-bucket"}, "settings.bucket", "NoSuchBucket"),
    ({"keys": {"access_key_id": "AKIAUNKNOWN0000", "secret_access_key": "an-unknown-secret-0123"}}, "credentials.access_key_id",
     "InvalidAccessKeyId"),
    ({"keys": {"secret_access_key": "a-wrong-secret-4567"}}, "credentials.secret_access_key", "SignatureDoesNotMatch"),
])
def test_a_refused_connection_check_names_the_store_code_and_saves_nothing(services, s3_compatible, change, field,
                                                                           code):
    keys = {**s3_compatible.keys, **change.get("keys", {})}
    settings = s3_settings(s3_compatible, **{k: v for k, v in change.items() if k != "keys"})
    with pytest.raises(Invalid) as refused:
        services.datastores.register(ALICE, "ws", "research", "s3", settings, keys)
    assert refused.value.field == field and refused.value.details == {"store_code": code}
    assert code in refused.value.message and keys["secret_access_key"] not in refused.value.message
    assert [d["name"] for d in services.datastores.list("ws")] == ["workspaceblobstore"]
    assert services.workspace_secrets.list("ws")["secrets"] == []


def test_an_unreachable_endpoint_is_refused_quickly(services):
    with pytest.raises(Invalid) as refused:
        services.datastores.register(ALICE, "ws", "gone", "s3", {"bucket": "data", "endpoint_url": "http://127.0.0.1:9"},
                                     {"access_key_id": "a", "secret_access_key": "b"})
    assert refused.value.field == "settings.endpoint_url"


def test_the_platforms_own_s3_with_its_role(backend, services, settings):
    if backend != "aws":
        pytest.skip("S3 without an endpoint_url is AWS itself: only moto stands in for it, on the aws backend")
    shown = services.datastores.register(ALICE, "ws", "lake", "s3", {"bucket": settings.bucket})
    assert shown["credential"] == "role" and shown["settings"]["prefix"] == ""
    assert "credential_secrets" not in shown


@pytest.mark.parametrize("settings_value, field", [
    ({"bucket": "UPPER"}, "settings.bucket"),
    ({"bucket": "data", "prefix": "../up"}, "settings.prefix"),
    ({"bucket": "data", "prefix": "/abs"}, "settings.prefix"),
    ({"bucket": "data", "prefix": "a\x00b"}, "settings.prefix"),
    ({"bucket": "data", "region": "moon"}, "settings.region"),
    ({"bucket": "data", "endpoint_url": "ftp://x"}, "settings.endpoint_url"),
    ({"bucket": "data", "colour": "red"}, "settings.colour"),
])
def test_bad_s3_settings_name_their_field(services, settings_value, field):
    with pytest.raises(Invalid) as refused:
        services.datastores.register(ALICE, "ws", "bad", "s3", settings_value)
    assert refused.value.field == field


def test_names_types_and_conflicts(services, s3_compatible):
    for name in ("workspaceblobstore", "1abc", "has-dash", ""):
        with pytest.raises((Invalid, Conflict)) as refused:
            services.datastores.register(ALICE, "ws", name, "s3", s3_settings(s3_compatible), s3_compatible.keys)
        assert refused.value.field == "name"
    with pytest.raises(Invalid) as blob:
        services.datastores.register(ALICE, "ws", "mine", "blob", {})
    assert blob.value.field == "type"
    services.datastores.register(ALICE, "ws", "research", "s3", s3_settings(s3_compatible), s3_compatible.keys)
    with pytest.raises(Conflict):
        services.datastores.register(ALICE, "ws", "research", "s3", s3_settings(s3_compatible), s3_compatible.keys)
    old = services.datastores.record("ws", "research")["credential_secrets"]
    replaced = services.datastores.register(ALICE, "ws", "research", "s3", s3_settings(s3_compatible, prefix="v2"),
                                            s3_compatible.keys, overwrite=True)
    assert replaced["settings"]["prefix"] == "v2"
    names = {s["name"] for s in services.workspace_secrets.list("ws")["secrets"]}
    assert names == set(replaced["credential_secrets"].values()) and not names & set(old.values())


def test_concurrent_registrations_of_one_name_make_one_datastore(services, s3_compatible):
    errors = all_at_once(lambda n: services.datastores.register(
        ALICE, "ws", "research", "s3", s3_settings(s3_compatible, prefix=f"p{n}"), s3_compatible.keys), 4)
    assert len(errors) == 3 and all(isinstance(e, Conflict) for e in errors)
    kept = services.datastores.record("ws", "research")["credential_secrets"]
    # The losers' keys were forgotten: only the winner's two secrets remain.
    assert {s["name"] for s in services.workspace_secrets.list("ws")["secrets"]} == set(kept.values())


def test_credentials_are_checked_before_they_replace_the_old_ones(services, s3_compatible):
    services.datastores.register(ALICE, "ws", "research", "s3", s3_settings(s3_compatible), s3_compatible.keys)
    before = services.datastores.record("ws", "research")["credential_secrets"]
    with pytest.raises(Invalid) as refused:
        services.datastores.update_credentials(ALICE, "ws", "research",
                                               {**s3_compatible.keys, "secret_access_key": "wrong"})
    assert refused.value.details == {"store_code": "SignatureDoesNotMatch"}
    assert services.datastores.record("ws", "research")["credential_secrets"] == before
    updated = services.datastores.update_credentials(ALICE, "ws", "research", s3_compatible.keys)
    after = services.datastores.record("ws", "research")["credential_secrets"]
    assert updated["credential"] == "access_key" and after != before
    assert {s["name"] for s in services.workspace_secrets.list("ws")["secrets"]} == set(after.values())


def test_default_and_delete(services, s3_compatible):
    services.datastores.register(ALICE, "ws", "research", "s3", s3_settings(s3_compatible), s3_compatible.keys)
    assert services.datastores.set_default(ALICE, "ws", "research")["is_default"]
    assert services.datastores.default("ws")["name"] == "research"
    assert [d["name"] for d in services.datastores.list("ws") if d["is_default"]] == ["research"]
    with pytest.raises(Conflict) as default:
        services.datastores.delete(ALICE, "ws", "research")
    assert "default" in default.value.message
    with pytest.raises(NotFound):
        services.datastores.set_default(ALICE, "ws", "nothing")
    with pytest.raises(Conflict):
        services.datastores.delete(ALICE, "ws", "workspaceblobstore")
    services.datastores.set_default(ALICE, "ws", "workspaceblobstore")
    assert services.datastores.delete(ALICE, "ws", "research") == {"name": "research", "deleted": True}
    assert services.workspace_secrets.list("ws")["secrets"] == []
    with pytest.raises(NotFound) as gone:
        services.datastores.get("ws", "research")
    assert gone.value.field == "datastore" and "research" in gone.value.message
    actions = [e["action"] for e in services.audit.list("ws")["entries"] if e["action"].startswith("datastore.")]
    assert actions.count("datastore.default_set") == 2 and "datastore.registered" in actions
    assert "datastore.deleted" in actions


def test_local_datastores_are_for_admins_under_the_platforms_roots(backend, services, tmp_path):
    folder = str(tmp_path / "shared" / "images")
    with pytest.raises(Forbidden):
        services.datastores.register(ALICE, "ws", "images", "local", {"path": folder})
    if backend == "aws":
        with pytest.raises(Invalid) as refused:
            services.datastores.register(ADMIN, "ws", "images", "local", {"path": folder})
        assert refused.value.field == "type"
        return
    shown = services.datastores.register(ADMIN, "ws", "images", "local", {"path": folder})
    assert shown["settings"] == {"root": str(tmp_path / "shared"), "path": "images"} and shown["credential"] == "none"
    for path in (str(tmp_path), str(tmp_path / "shared" / ".." / "elsewhere"), "relative/path",
                 str(tmp_path / "shared-but-not"), str(tmp_path / "shared" / "missing")):
        with pytest.raises(Invalid) as refused:
            services.datastores.register(ADMIN, "ws", "other", "local", {"path": path})
        assert refused.value.field == "settings.path", path
