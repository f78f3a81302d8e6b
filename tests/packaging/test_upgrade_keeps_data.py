"""A store written by the previous release opens with this code, migrates if it must, and loses nothing.

tests/fixtures/store-481b1ea.tar.gz is a NIMBUS_HOME that commit 481b1ea's platform wrote, with the
manifest of what that release answered for every object in it (tests/fixtures/make_store_fixture.py
made both). A copy is served by this code's platform, and every object is read through the SDK and
the API and compared with the manifest by value: fields, metric points, log text, and the sha256 of
every output and model file. Only what a user sees is compared, never the table's or folders' layout.
"""
from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

from chalicelib.store.sqlite_table import SCHEMA_VERSION
from nimbus import Model, Run, Workspace
from nimbus.client import ApiClient
from nimbus.webservice import Webservice

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "store-481b1ea.tar.gz"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    """The fixture's home, copied, served by this code's platform: (manifest, url, admin token, home)."""
    folder = tmp_path_factory.mktemp("upgrade")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(folder, filter="data")
    manifest, home, port = json.loads((folder / "manifest.json").read_text()), folder / "home", free_port()
    home.chmod(0o700)
    server = subprocess.Popen([sys.executable, "-m", "chalicelib.local", "--home", str(home), "--port", str(port)],
                              cwd=ROOT, stdout=open(folder / "server.log", "wb"), stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    try:
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()
            try:
                requests.get(f"{url}/v1/whoami", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the platform did not start on the old store"
                time.sleep(0.1)
        token = json.loads((home / "credentials").read_text())["token"]
        yield manifest, url, token, home
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def research(upgraded):
    _, url, token, _ = upgraded
    return Workspace("research", client=ApiClient(url, token))


def test_the_fixture_says_which_release_made_it(upgraded):
    manifest = upgraded[0]
    assert manifest["commit"] == "481b1ea" and manifest["made_by"] == "tests/fixtures/make_store_fixture.py"


def test_the_store_opens_clean_at_the_current_schema(upgraded):
    with sqlite3.connect(upgraded[3] / "nimbus.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_users_tokens_workspaces_and_members_are_kept(upgraded):
    manifest, url, token, _ = upgraded
    admin = ApiClient(url, token)
    assert admin.get("/v1/whoami")["user"] == "admin"  # the old admin token still signs in
    assert sorted(u["name"] for u in admin.get("/v1/users")["users"]) == manifest["users"]
    workspaces = {w["name"] for w in admin.get("/v1/workspaces")["workspaces"]}
    assert workspaces == set(manifest["workspaces"])
    for name, expected in manifest["workspaces"].items():
        assert admin.get(f"/v1/workspaces/{name}").get("description") == expected["description"]
        members = sorted([m["user"], m["role"]] for m in admin.get(f"/v1/workspaces/{name}/members")["members"])
        assert members == expected["members"]
    alice = ApiClient(url, manifest["alice_token"])  # a user's token made by the old release
    assert alice.get("/v1/whoami")["user"] == "alice"
    assert {w["name"]: w["role"] for w in alice.get("/v1/workspaces")["workspaces"]} == {"research": "contributor"}


def test_runs_keep_their_fields_metrics_logs_and_outputs(upgraded, research, tmp_path):
    manifest = upgraded[0]
    assert len(manifest["runs"]) == 2
    for run_id, expected in manifest["runs"].items():
        run = Run(research, run_id)
        details = run.get_details()
        for field in ("experiment", "status", "tags", "properties", "display_name"):
            assert details.get(field) == expected[field], (run_id, field)
        for name, metric in expected["metrics"].items():
            history = run.get_metric_history(name)
            assert (history["type"], history["values"], history["steps"]) == \
                   (metric["type"], metric["values"], metric["steps"]), (run_id, name)
        assert {f["path"]: f["size"] for f in run.list_files()} == {p: f["size"] for p, f in expected["files"].items()}
        for path, file in expected["files"].items():
            downloaded = Path(run.download_file(path, tmp_path / run_id / path))
            assert sha256(downloaded.read_bytes()) == file["sha256"], (run_id, path)
        for stream, text in expected["logs"].items():
            assert run.get_logs(stream)["text"] == text, (run_id, stream)


def test_model_versions_aliases_and_files_are_kept(upgraded, research, tmp_path):
    manifest = upgraded[0]
    for ref, expected in manifest["models"].items():
        name, version = ref.split(":")
        model = Model(research, name, int(version))
        for field in ("asset_path", "tags", "properties", "description"):
            assert getattr(model, field) == expected[field], (ref, field)
        target = tmp_path / ref.replace(":", "-")
        model.download(target, exist_ok=True, show_progress=False)
        files = {str(p.relative_to(target)): sha256(p.read_bytes()) for p in target.rglob("*") if p.is_file()}
        assert files == expected["files"], ref
    for name, aliases in manifest["aliases"].items():
        assert Model.get_aliases(research, name)["aliases"] == aliases


def test_the_environment_definition_is_kept(upgraded, research):
    expected = upgraded[0]["environment"]
    found = research.client.get("/v1/workspaces/research/environments/fixture-env/versions/1")
    assert {k: found.get(k) for k in expected} == expected


def test_the_endpoint_keeps_its_deployment_and_keys_and_serves_again(upgraded, research):
    expected = upgraded[0]["endpoint"]
    service = Webservice(research, expected["name"])
    assert service.traffic == expected["traffic"]
    deployments = {d["name"]: d for d in service.deployments}
    for name, fields in expected["deployments"].items():
        assert {k: deployments[name].get(k) for k in fields} == fields, name
    primary, secondary = service.get_keys()
    assert [sha256(primary.encode()), sha256(secondary.encode())] == expected["key_sha256"]
    # The old deployment's model and source, deployed again by this code, answer as they did.
    blue = service.get_deployment("blue")
    research.client.request("PUT", f"/v1/workspaces/research/endpoints/{expected['name']}/deployments/blue",
                            json={"models": blue["models"], "snapshot_id": blue["snapshot_id"],
                                  "entry_script": blue["entry_script"]})
    service.wait_for_deployment(timeout_s=120)
    assert service.run(expected["scored"]["input"]) == expected["scored"]["output"]
