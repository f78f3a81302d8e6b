"""Versioned environments on both backends: numbering, content hashes, immutability once used, errors."""
from __future__ import annotations

import pytest

from tests.server.api.helpers import all_at_once
from tests.server.api.test_submit import RecordingDispatcher, submit

WS = "/v1/workspaces/team"
ENVS = f"{WS}/environments"
SKLEARN = {"python": "3.11", "pip": ["scikit-learn==1.5.0", "numpy>=1.26"], "variables": {"OMP_NUM_THREADS": "1"}}


@pytest.fixture
def dispatcher(services):
    services.dispatcher = RecordingDispatcher()
    return services.dispatcher


@pytest.fixture
def team(api):
    api.ok("POST", "/v1/workspaces", {"name": "team"})


def test_versions_count_up_and_the_same_definition_returns_the_latest(api, team):
    status, first = api.call("POST", f"{ENVS}/sklearn/versions", SKLEARN)
    assert status == 201 and first["id"] == "sklearn:1" and first["used"] is False
    assert first["definition"] == {**SKLEARN, "base_image": "python:3.11-slim"}
    assert len(first["hash"]) == 64

    status, again = api.call("POST", f"{ENVS}/sklearn/versions", {**SKLEARN, "pip": [" scikit-learn==1.5.0", "numpy>=1.26"]})
    assert status == 200 and again["version"] == 1 and again["hash"] == first["hash"]

    status, second = api.call("POST", f"{ENVS}/sklearn/versions", {**SKLEARN, "pip": ["scikit-learn==1.5.1"]})
    assert status == 201 and second["version"] == 2 and second["hash"] != first["hash"]
    # the first definition again is new relative to the latest: a third version, with the first's hash
    status, third = api.call("POST", f"{ENVS}/sklearn/versions", SKLEARN)
    assert status == 201 and third["version"] == 3 and third["hash"] == first["hash"]

    assert api.ok("GET", f"{ENVS}/sklearn/versions/latest")["version"] == 3
    shown = api.ok("GET", f"{ENVS}/sklearn/versions/2")
    assert shown["definition"]["pip"] == ["scikit-learn==1.5.1"] and shown["builds"] == []


def test_identical_definitions_share_a_hash_across_names_and_the_list_holds_latest_versions(api, team):
    one = api.ok("POST", f"{ENVS}/one/versions", SKLEARN)
    other = api.ok("POST", f"{ENVS}/other/versions", {**SKLEARN, "variables": {"OMP_NUM_THREADS": "1"}})
    assert one["hash"] == other["hash"]
    api.ok("POST", f"{ENVS}/one/versions", {"pip": []})
    listed = api.ok("GET", ENVS)["environments"]
    assert sorted((e["name"], e["version"]) for e in listed) == [("one", 2), ("other", 1)]
    default = next(e for e in listed if e["name"] == "one")
    assert default["definition"] == {"python": "3.11", "pip": [], "variables": {}, "base_image": "python:3.11-slim"}
    status, body = api.call("DELETE", WS)
    assert status == 409 and "not empty" in body["message"]  # environments are workspace content


def test_concurrent_registrations_number_versions_once_each(api, team, services):
    from chalicelib.services.identity import Principal

    admin, found = Principal("admin", True, "t"), []
    same = all_at_once(lambda n: found.append(services.environments.create(admin, "team", "same", pip=["numpy"])), 4)
    assert not same and {(v["version"], created) for v, created in found} <= {(1, True), (1, False)}
    assert sum(created for _, created in found) == 1
    errors = all_at_once(lambda n: services.environments.create(admin, "team", "many", pip=[f"numpy=={n}.0"]), 4)
    assert not errors and api.ok("GET", f"{ENVS}/many/versions/latest")["version"] == 4


def test_a_version_can_be_replaced_until_a_submitted_run_uses_it(api, team, dispatcher, snapshot_id):
    api.ok("POST", f"{ENVS}/sklearn/versions", SKLEARN)
    replaced = api.ok("PUT", f"{ENVS}/sklearn/versions/1", {**SKLEARN, "pip": ["scikit-learn==1.5.2"]})
    assert replaced["version"] == 1 and replaced["definition"]["pip"] == ["scikit-learn==1.5.2"]

    status, run = submit(api, snapshot_id, run_config={"script": "train.py", "environment": "sklearn"})
    assert status == 201, run
    assert run["run_config"]["environment"] == "sklearn:1"  # pinned to the version resolved at submit
    assert dispatcher.submitted[-1].environment["hash"] == replaced["hash"]
    assert api.ok("GET", f"{ENVS}/sklearn/versions/1")["used"] is True

    status, body = api.call("PUT", f"{ENVS}/sklearn/versions/1", SKLEARN)
    assert status == 409 and body["field"] == "version" and "used" in body["message"]

    status, body = submit(api, snapshot_id, run_config={"script": "train.py", "environment": "nope:1"})
    assert status == 400 and body["field"] == "run_config.environment"
    status, body = submit(api, snapshot_id, run_config={"script": "train.py", "environment": "sklearn:7"})
    assert status == 400 and body["field"] == "run_config.environment"


def test_a_run_token_reads_its_workspace_environments_but_cannot_register(api, services, team, dispatcher,
                                                                           snapshot_id):
    api.ok("POST", f"{ENVS}/sklearn/versions", SKLEARN)
    _, run = submit(api, snapshot_id, run_config={"script": "train.py", "environment": "sklearn:1"})
    token = services.identity.create_run_token(run["id"], "team", "admin")
    assert api.ok("GET", f"{ENVS}/sklearn/versions/1", token=token)["id"] == "sklearn:1"
    status, _ = api.call("POST", f"{ENVS}/other/versions", SKLEARN, token=token)
    assert status == 403
    api.ok("POST", "/v1/workspaces", {"name": "elsewhere"})
    status, _ = api.call("GET", "/v1/workspaces/elsewhere/environments/sklearn/versions/1", token=token)
    assert status == 403


BAD = [
    ({"pip": ["numpy>=>1"]}, "pip[0]"),
    ({"pip": ["numpy", "-r other.txt"]}, "pip[1]"),
    ({"pip": ["numpy", ""]}, "pip[1]"),
    ({"pip": "numpy"}, "pip"),
    ({"python": "3"}, "python"),
    ({"python": "3.11.2"}, "python"),
    ({"variables": {"1BAD": "x"}}, "variables"),
    ({"variables": {"NIMBUS_URL": "x"}}, "variables.NIMBUS_URL"),
    ({"variables": {"A": 1}}, "variables.A"),
    ({"base_image": "Not An Image"}, "base_image"),
    ({"conda": []}, "conda"),
]


def test_bad_definitions_are_refused_naming_the_field(api, team):
    for body, field in BAD:
        status, reply = api.call("POST", f"{ENVS}/bad/versions", body)
        assert status == 400 and reply["field"] == field, (body, reply)
    assert api.call("GET", f"{ENVS}/bad/versions/latest")[0] == 404


def test_pip_options_urls_and_markers_are_accepted(api, team):
    pip = ["--no-index", "--find-links /wheels", "--extra-index-url=https://example.org/simple",
           "torch==2.3.0; platform_system == 'Linux'", "tiny @ https://example.org/tiny-0.1-py3-none-any.whl"]
    created = api.ok("POST", f"{ENVS}/opts/versions", {"pip": pip, "base_image": "ghcr.io/org/img:1.0"})
    assert created["definition"]["pip"] == pip and created["definition"]["base_image"] == "ghcr.io/org/img:1.0"


def test_missing_names_and_versions(api, team):
    assert api.call("GET", f"{ENVS}/none/versions/1")[0] == 404
    assert api.call("GET", f"{ENVS}/none/versions/latest")[0] == 404
    status, body = api.call("GET", f"{ENVS}/none/versions/first")
    assert status == 400 and body["field"] == "version"
    status, body = api.call("POST", f"{ENVS}/{'x' * 300}/versions", {})
    assert status == 400 and body["field"] == "name"
    assert api.call("POST", "/v1/workspaces/ghost/environments/a/versions", {})[0] in (403, 404)


@pytest.fixture
def snapshot_id(api, services, team):
    import hashlib

    content = b"print('hello')\n"
    digest = hashlib.sha256(content).hexdigest()
    prefix = services.workspaces.record("team")["blob_prefix"]
    services.ctx.blobs.put_bytes(f"{prefix}snapshots/content/{digest}", content)
    return api.ok("POST", f"{WS}/snapshots", {"files": [{"path": "train.py", "digest": digest,
                                                         "size": len(content)}]})["id"]
