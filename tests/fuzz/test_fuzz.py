"""Property-based fuzzing of every route of the running local platform with schemathesis, loaded from the
platform's own /v1/openapi.json, as an admin, a contributor and a reader.

Each caller gets a workspace of its own, seeded with one of everything (a run with a metric, a log and an
output, a snapshot, a model with an alias, an environment, an endpoint with a deployment, an instance
compute target), so generated requests reach real objects: path parameters name them, the rest
(queries, bodies) is generated, valid (positive) and invalid (negative). The admin also sends requests
whose path parameters are generated too, for what odd names and ids do. Every answer must not be a
server error and must match the document: its status declared, its content type and its body's schema.
Bounded: a few examples per operation, no shrinking, a fixed seed; the whole fuzz takes about a minute.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance, ignored_auth, response_schema_conformance, status_code_conformance,
    unsupported_method,
)

ROOT = Path(__file__).resolve().parents[2]
# Per operation, caller and mode; NIMBUS_FUZZ_EXAMPLES=50 fuzzes deeper (and slower) by hand.
EXAMPLES = int(os.environ.get("NIMBUS_FUZZ_EXAMPLES", "3"))
# ignored_auth: a route that declares a security scheme refuses a request without (or with bad) credentials;
# unsupported_method: a method the route does not take gets 405.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          ignored_auth, unsupported_method]
SCORE_PY = b"def init():\n    pass\n\n\ndef run(raw_data):\n    return {'length': len(raw_data)}\n"
WEIGHTS = b'{"weight": 2}'
OUTPUT = b"an output\n"


class Platform:
    """`python -m chalicelib.local` on a port the OS picks, its home and log in a temporary folder."""

    def __init__(self, home: Path):
        self.home, self.log_path = home, home.parent / "platform.log"
        self.log = open(self.log_path, "wb")  # a file, not a pipe: a full pipe would block the server
        self.process = subprocess.Popen([sys.executable, "-m", "chalicelib.local", "--home", str(home), "--port", "0"],
                                        cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.url, self.token = self._wait_until_serving()

    def _wait_until_serving(self) -> tuple[str, str]:
        deadline = time.time() + 60
        while time.time() < deadline and self.process.poll() is None:
            try:
                credentials = json.loads((self.home / "credentials").read_text())
                requests.get(credentials["url"] + "/v1/openapi.json", timeout=2).raise_for_status()
                return credentials["url"], credentials["token"]
            except (OSError, ValueError, KeyError, requests.RequestException):
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the local platform did not start:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Caller:
    def __init__(self, platform: Platform, token: str):
        self.url = platform.url
        self.session = requests.Session()
        self.auth = {"Authorization": f"Bearer {token}"}  # sent per request: the fuzz also sends none

    def ok(self, method: str, path: str, body=None, expected=(200, 201)) -> dict:
        response = self.session.request(method, self.url + path, json=body, headers=self.auth, timeout=30)
        assert response.status_code in expected, (method, path, response.status_code, response.text)
        return response.json() if response.content else {}

    def put_bytes(self, url: str, data: bytes) -> None:
        assert requests.put(url, data=data, timeout=30).status_code == 200


def seed(admin: Caller, workspace: str, members: dict[str, str]) -> dict[str, str]:
    """One of everything in `workspace`; returns the path parameters that name them."""
    base = f"/v1/workspaces/{workspace}"
    admin.ok("POST", "/v1/workspaces", {"name": workspace})
    for user, role in members.items():
        admin.ok("POST", f"{base}/members", {"user": user, "role": role})
    run = admin.ok("POST", f"{base}/runs", {"experiment": "exp", "status": "Running"})["id"]
    admin.ok("POST", f"{base}/runs/{run}/metrics", {"metrics": [{"name": "acc", "values": [0.5, 0.75]}]})
    admin.ok("POST", f"{base}/runs/{run}/logs/driver", {"text": "hello\n"})
    for upload in admin.ok("POST", f"{base}/runs/{run}/outputs/uploads", {"paths": ["out.txt"]})["uploads"]:
        admin.put_bytes(upload["url"], OUTPUT)
    digest = hashlib.sha256(SCORE_PY).hexdigest()
    for upload in admin.ok("POST", f"{base}/snapshots/uploads",
                           {"files": [{"digest": digest, "size": len(SCORE_PY)}]})["uploads"]:
        admin.put_bytes(upload["url"], SCORE_PY)
    snapshot = admin.ok("POST", f"{base}/snapshots",
                        {"files": [{"path": "score.py", "digest": digest, "size": len(SCORE_PY)}]})["id"]
    upload = admin.ok("POST", f"{base}/models/m/uploads", {"files": [{"path": "weights.json", "size": len(WEIGHTS)}]})
    admin.put_bytes(upload["files"][0]["url"], WEIGHTS)
    admin.ok("POST", f"{base}/models/m/versions", {"upload_id": upload["upload_id"]})
    admin.ok("PUT", f"{base}/models/m/aliases/prod", {"version": 1})
    admin.ok("POST", f"{base}/environments/env/versions", {"python": "3.11"})
    admin.ok("POST", f"{base}/computes", {"name": "agents", "type": "instance", "settings": {}})
    admin.ok("PUT", f"{base}/endpoints/ep/deployments/blue",
             {"models": ["m:1"], "snapshot_id": snapshot, "entry_script": "score.py"}, expected=(200, 202))
    key = admin.ok("GET", f"{base}/endpoints/ep/keys")["primary_key"]
    return {"workspace": workspace, "run_id": run, "experiment": "exp", "snapshot_id": snapshot, "alias": "prod",
            "endpoint": "ep", "deployment": "blue", "stream": "driver", "key": key}


def path_parameters(path: str, names: list[str], seeded: dict[str, str], user: str) -> dict[str, str]:
    """The seeded object each path parameter names (`token_id` stays generated: revoking the caller's own
    token would end the fuzz)."""
    by_kind = {"/models/": ("m", "1"), "/environments/": ("env", "1"), "/computes/": ("agents", None)}
    kind = next((value for marker, value in by_kind.items() if marker in path), (None, None))
    values = {**seeded, "name": kind[0], "version": kind[1],
              "user": "bystander" if "/members/" in path else user}
    return {name: values[name] for name in names if values.get(name) is not None}


def operations(schema) -> list:
    found = [result.ok() for result in schema.get_all_operations()]
    # Deletes last, and the workspace's last of all: the rest of the fuzz needs what they remove.
    return sorted(found, key=lambda op: (op.method.upper() == "DELETE", op.path == "/v1/workspaces/{workspace}"))


def fuzz(operation, caller: Caller, fixed: dict[str, str], headers: dict[str, str]) -> list[str]:
    """What went wrong in `operation` for this caller: nothing, or one report per generation mode."""
    failures = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(mode, path_parameters=fixed))
        def check(case):
            response = case.call(base_url=caller.url, session=caller.session, headers=headers, timeout=30)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            check()
        except (FailureGroup, Exception) as failure:  # noqa: BLE001 - every operation is fuzzed; all are reported
            failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}]: {failure}"[:3000])
    return failures


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    running = Platform(tmp_path_factory.mktemp("fuzz") / "home")
    yield running
    running.stop()


def test_no_route_answers_a_server_error_or_breaks_the_document(platform):
    admin = Caller(platform, platform.token)
    tokens = {}
    for user in ("contrib", "reader", "bystander"):
        admin.ok("POST", "/v1/users", {"name": user})
        tokens[user] = admin.ok("POST", f"/v1/users/{user}/tokens", {"name": "fuzz"})["token"]
    callers = {"admin": (admin, "owner"), "contrib": (Caller(platform, tokens["contrib"]), "contributor"),
               "reader": (Caller(platform, tokens["reader"]), "reader")}
    seeded = {}
    for user, (_, role) in callers.items():
        members = {"bystander": "reader", **({user: role} if user != "admin" else {})}
        seeded[user] = seed(admin, f"fuzz-{user}", members)

    schema = schemathesis.openapi.from_url(f"{platform.url}/v1/openapi.json")
    failures = []
    started = time.monotonic()
    for operation in operations(schema):
        failures += [f"as admin, any path: {text}" for text in fuzz(operation, admin, {}, admin.auth)]
    for user, (caller, _) in callers.items():
        for operation in operations(schema):
            names = [p.name for p in operation.path_parameters]
            fixed = path_parameters(operation.path, names, seeded[user], user)
            scoring = operation.path.endswith("/score")
            headers = {"Authorization": f"Bearer {seeded[user]['key']}"} if scoring else caller.auth
            failures += [f"as {user}: {text}" for text in fuzz(operation, caller, fixed, headers)]
    elapsed = time.monotonic() - started
    assert not failures, (f"{len(failures)} failure(s) in {elapsed:.0f} s:\n\n" + "\n\n".join(failures)
                          + f"\n\nthe platform's log ends:\n{platform.log_path.read_text()[-3000:]}")
