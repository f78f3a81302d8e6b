"""Datastores over HTTP: registered by contributors, seen by readers, their keys in no answer, log or audit entry."""
from __future__ import annotations

import logging

import pytest

from chalicelib.api.request_telemetry import logger as request_log

WS = "/v1/workspaces/ws"
DATASTORES = f"{WS}/datastores"


@pytest.fixture
def team(api, user_token):
    api.ok("POST", "/v1/workspaces", {"name": "ws"})
    tokens = {}
    for name, role in (("carol", "contributor"), ("rita", "reader")):
        tokens[name] = user_token(name)
        api.ok("POST", f"{WS}/members", {"user": name, "role": role})
    return tokens


def body(store, name: str = "research", **settings) -> dict:
    return {"name": name, "type": "s3", "settings": {"bucket": store.bucket, "endpoint_url": store.url, **settings},
            "credentials": store.keys}


def test_register_show_list_update_and_delete_never_answer_a_key(api, team, s3_compatible, caplog):
    caplog.set_level(logging.DEBUG, logger=request_log.name)
    made = api.ok("POST", DATASTORES, body(s3_compatible, prefix="iris"), token=team["carol"], status=201)
    assert made["credential"] == "access_key" and made["settings"]["prefix"] == "iris"
    shown = api.ok("GET", f"{DATASTORES}/research", token=team["rita"])
    listed = api.ok("GET", DATASTORES, token=team["rita"])
    assert [d["name"] for d in listed["datastores"]] == ["workspaceblobstore", "research"]
    updated = api.ok("PUT", f"{DATASTORES}/research/credentials", {"credentials": s3_compatible.keys},
                     token=team["carol"])
    as_default = api.ok("PUT", f"{WS}/default-datastore", {"name": "research"}, token=team["carol"])
    assert as_default["is_default"] and api.ok("GET", f"{WS}/default-datastore")["name"] == "research"
    api.ok("PUT", f"{WS}/default-datastore", {"name": "workspaceblobstore"}, token=team["carol"])
    audit = api.ok("GET", f"{WS}/audit")
    deleted = api.ok("DELETE", f"{DATASTORES}/research", token=team["carol"])
    assert deleted == {"name": "research", "deleted": True}
    everything = repr([made, shown, listed, updated, as_default, audit, deleted]) + caplog.text
    assert s3_compatible.secret_access_key not in everything and s3_compatible.access_key_id not in everything
    actions = [e["action"] for e in audit["entries"] if e["action"].startswith("datastore.")]
    assert actions == ["datastore.default_set", "datastore.default_set", "datastore.credentials_updated",
                       "datastore.registered"]


def test_readers_do_not_register_and_bad_input_names_its_field(api, team, s3_compatible):
    code, error = api.call("POST", DATASTORES, body(s3_compatible), token=team["rita"])
    assert code == 403
    for sent, field in (
        ({**body(s3_compatible), "type": "ftp"}, "type"),
        ({**body(s3_compatible), "credentials": {"access_key_id": "a"}}, "credentials.secret_access_key"),
        ({**body(s3_compatible), "colour": "red"}, "colour"),
        (body(s3_compatible, prefix="../escape"), "settings.prefix"),
        (body(s3_compatible, name="bad-name"), "name"),
        ({**body(s3_compatible), "settings": {"bucket": "missing-bucket", "endpoint_url": s3_compatible.url}},
         "settings.bucket"),
    ):
        code, error = api.call("POST", DATASTORES, sent, token=team["carol"])
        assert code == 400 and error["field"] == field, (sent, error)
    code, error = api.call("GET", f"{DATASTORES}/nothing", token=team["rita"])
    assert code == 404 and "nothing" in error["message"]
    code, error = api.call("POST", DATASTORES, {**body(s3_compatible), "settings": {
        "bucket": "missing-bucket", "endpoint_url": s3_compatible.url}}, token=team["carol"])
    assert error["details"] == {"store_code": "NoSuchBucket"}
    assert [d["name"] for d in api.ok("GET", DATASTORES)["datastores"]] == ["workspaceblobstore"]


def test_only_admins_register_local_datastores(api, team, tmp_path):
    code, error = api.call("POST", DATASTORES, {"name": "disk", "type": "local", "settings": {"path": str(tmp_path)}},
                           token=team["carol"])
    assert code == 403 and "admin" in error["message"]
