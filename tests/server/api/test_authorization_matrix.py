"""The authorization matrix: every route of ROUTES, called by every kind of caller, against one declaration per route.

DECLARED below holds one entry per (method, path) of `chalicelib.api.routing.ROUTES`: who may call the route
(one of a few access patterns: `member(...)`, `any_user(...)`, `self_or_admin(...)`, `admin_only()`,
`endpoint_key_only()`), a minimal valid body and query, and, for a route that consumes what it acts on, how to
make a fresh target. A route without a declaration fails `test_every_route_is_declared` (and its own case);
a declaration of a route that no longer exists fails it too.

Every (route, caller) pair is one case, sent in-process to the real Chalice app over one world seeded per
module on the local backend (a workspace with runs, a child run, an experiment, a model version and an alias,
an environment, an endpoint with a live deployment, a compute target, a snapshot). Each answer falls into one
outcome class, and must be the declared one:
  UNAUTHENTICATED  401: no token, an unknown one, or a credential the route does not take
  FORBIDDEN        403: a known caller whose role, admin flag or run token does not allow this
  HIDDEN           404 "workspace … not found": a caller who is not a member learns nothing of the workspace
  PERMITTED        the declared success statuses (2xx unless the declaration says otherwise)
and no case ever answers 5xx.

Cases that consume their target (delete a workspace, a run's status or cancel, revoke a token, delete a model
version, an alias, an endpoint, a deployment or a compute target, remove a member) aim, for each caller the
declaration permits, at a target made for that case alone (`fresh=`); refused callers aim at the shared one,
which a correct refusal leaves intact (a wrong permission fails on its own case first). So the cases can run
in any order, and each stands alone.

To declare a new route, add one entry to DECLARED, keyed by its method and its path exactly as given to
`api_route`, e.g. `("GET", "/v1/workspaces/{workspace}/audit"): Declared(member("owner"))`:
- `access`: the pattern of who may call it (read the pattern functions: each gives all the callers' outcomes);
- `body=`: a minimal valid JSON body (a function of (world, caller) when it must be unique, e.g. a new name);
- `query=`: a query string its permitted callers need;
- `fresh=`: when a permitted call consumes its target, a function making one and giving its path parameters;
- `permitted=`: the statuses a permitted caller gets, when not 2xx (say why in a comment).
A new kind of path parameter gets its value, an object seeded by World, in `World.path_params`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.api import service_locator
from chalicelib.api.app import app
from chalicelib.api.routing import ROUTES
from chalicelib.services.identity import Principal
from chalicelib.services.workspaces import rank
from chalicelib.settings import Settings
from chalicelib.wiring import build_services
from tests.server.api.helpers import transfer

WS, ELSEWHERE = "ws", "elsewhere"
OWNER_NAME, CONTRIBUTOR_NAME, READER_NAME, STRANGER_NAME, SPARE_NAME = (
    "owner", "contributor", "reader", "stranger", "spare")
DEMOTED_NAME, DEPARTED_NAME = "demoted", "departed"  # contributors who submitted a run, then became a reader / left
SECRET_NAME = "db-password"
DATASTORE_NAME = "research"
DATASTORE_PREFIX = "matrix"
DATASET_NAME = "seeds"
UNKNOWN_TOKEN = "nmb_" + "A" * 43  # well-formed, never issued
SCORE_PY = b'''import json


def init():
    pass


def run(raw_data):
    return {"echo": json.loads(raw_data)}
'''


# --- callers and outcomes ------------------------------------------------------------------------------------
class Caller(Enum):
    NO_TOKEN = "no token"
    BAD_TOKEN = "bad token"
    NON_MEMBER = "non-member"
    READER = "reader"
    CONTRIBUTOR = "contributor"
    OWNER = "owner"
    ADMIN = "admin"  # a platform admin who is not a member of the workspace
    OWN_RUN = "own run token"  # the run token of the route's run (or of run A where the route names none)
    OTHER_RUN = "other run token"  # the run token of run B, in the same workspace
    FOREIGN_RUN = "foreign run token"  # the run token of a run in another workspace
    DEMOTED_RUN = "demoted submitter's run token"  # on its own run, whose submitter is now a reader
    DEPARTED_RUN = "departed submitter's run token"  # on its own run, whose submitter left the workspace
    ENDPOINT_KEY = "endpoint key"  # a valid key of the endpoint `calc`, sent as a bearer token


class Outcome(Enum):
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    HIDDEN = 404
    PERMITTED = 200


U, F, H, P = Outcome.UNAUTHENTICATED, Outcome.FORBIDDEN, Outcome.HIDDEN, Outcome.PERMITTED
ROLE_CALLERS = {"reader": Caller.READER, "contributor": Caller.CONTRIBUTOR, "owner": Caller.OWNER}
USERS = (Caller.NON_MEMBER, Caller.READER, Caller.CONTRIBUTOR, Caller.OWNER, Caller.ADMIN)
RUN_TOKENS = (Caller.OWN_RUN, Caller.OTHER_RUN, Caller.FOREIGN_RUN, Caller.DEMOTED_RUN, Caller.DEPARTED_RUN)
NOT_A_TOKEN = {Caller.NO_TOKEN: U, Caller.BAD_TOKEN: U, Caller.ENDPOINT_KEY: U}


class RunTokens(Enum):
    """Which run tokens a workspace route lets in (always of a run of that workspace)."""

    NONE = "none"
    ITS_RUN = "the route's own run"  # its run_id (or a descendant's), or the run the body names
    ANY_RUN = "any run of the workspace"


# --- access patterns: what each caller gets --------------------------------------------------------------
def member(minimum: str, run_tokens: RunTokens = RunTokens.NONE) -> dict[Caller, Outcome]:
    """A workspace route: members of at least `minimum`; others (admins too) do not see the workspace. A run
    token acts for its submitter, so only within the role the submitter holds now."""
    outcomes = {**NOT_A_TOKEN, Caller.NON_MEMBER: H, Caller.ADMIN: H, Caller.FOREIGN_RUN: F, Caller.DEPARTED_RUN: F}
    outcomes.update({caller: P if rank(role) >= rank(minimum) else F for role, caller in ROLE_CALLERS.items()})
    outcomes[Caller.OWN_RUN] = F if run_tokens is RunTokens.NONE else P
    outcomes[Caller.OTHER_RUN] = P if run_tokens is RunTokens.ANY_RUN else F
    outcomes[Caller.DEMOTED_RUN] = outcomes[Caller.OWN_RUN] if minimum == "reader" else F
    return outcomes


def any_user(run_tokens: bool = False) -> dict[Caller, Outcome]:
    """Any authenticated user; run tokens only when `run_tokens`."""
    return {**NOT_A_TOKEN, **{c: P for c in USERS}, **{c: P if run_tokens else F for c in RUN_TOKENS}}


def self_or_admin(self_caller: Caller) -> dict[Caller, Outcome]:
    """A route about one user (the path's {user} is `self_caller`): that user or an admin."""
    return {**NOT_A_TOKEN, **{c: P if c in (self_caller, Caller.ADMIN) else F for c in USERS},
            **{c: F for c in RUN_TOKENS}}


def admin_only() -> dict[Caller, Outcome]:
    return {**NOT_A_TOKEN, **{c: P if c is Caller.ADMIN else F for c in USERS}, **{c: F for c in RUN_TOKENS}}


def run_tokens_only(minimum: str = "reader", run_tokens: RunTokens = RunTokens.ANY_RUN) -> dict[Caller, Outcome]:
    """A route for runs alone, declared with `role=minimum, run_token=True` and refusing user tokens in its view:
    members get 403 (non-members still 404, from the role check)."""
    return {**member(minimum, run_tokens), **{caller: F for caller in ROLE_CALLERS.values()}}


def endpoint_key_only() -> dict[Caller, Outcome]:
    """The scoring route: only a key of its endpoint; every token is refused as unauthenticated."""
    return {c: P if c is Caller.ENDPOINT_KEY else U for c in Caller}


# --- declarations ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Declared:
    """One route's expectations. `body` and `query` are values or functions of (world, caller); `fresh`
    gives the path parameters of a target made for one permitted caller, for routes that consume theirs."""

    access: dict[Caller, Outcome]
    body: Any = None
    query: Any = ""
    fresh: Callable[[World, Caller], dict[str, str]] | None = None
    permitted: tuple[int, ...] = (200, 201, 202, 204)


RUN = "/v1/workspaces/{workspace}/runs/{run_id}"
MODEL = "/v1/workspaces/{workspace}/models/{name}"
VERSION = MODEL + "/versions/{version}"
ENDPOINT = "/v1/workspaces/{workspace}/endpoints/{endpoint}"
DEPLOYMENT = ENDPOINT + "/deployments/{deployment}"
ENVIRONMENT = "/v1/workspaces/{workspace}/environments/{name}/versions"
COMPUTES = "/v1/workspaces/{workspace}/computes"
SNAPSHOTS = "/v1/workspaces/{workspace}/snapshots"
SECRETS = "/v1/workspaces/{workspace}/secrets"
DATASTORES = "/v1/workspaces/{workspace}/datastores"
DATASETS = "/v1/workspaces/{workspace}/datasets"
DATASET_VERSION = DATASETS + "/{name}/versions/{version}"
ITS_RUN, ANY_RUN = RunTokens.ITS_RUN, RunTokens.ANY_RUN
ENV_DEFINITION = {"python": "3.11", "pip": ["numpy>=1.26"]}

DECLARED: dict[tuple[str, str], Declared] = {
    # identity
    ("GET", "/v1/whoami"): Declared(any_user(run_tokens=True)),
    ("POST", "/v1/users"): Declared(admin_only(), body=lambda w, c: {"name": w.unique("user")}),
    ("GET", "/v1/users"): Declared(admin_only()),
    ("POST", "/v1/users/{user}/tokens"): Declared(self_or_admin(Caller.READER), body={"name": "matrix"}),
    ("GET", "/v1/users/{user}/tokens"): Declared(self_or_admin(Caller.READER)),
    ("DELETE", "/v1/users/{user}/tokens/{token_id}"): Declared(self_or_admin(Caller.READER),
                                                              fresh=lambda w, c: {"token_id": w.spare_token()}),
    ("GET", "/v1/admin/stats"): Declared(admin_only()),
    # workspaces and members (role=None on the route: the service checks the membership)
    ("POST", "/v1/workspaces"): Declared(any_user(), body=lambda w, c: {"name": w.unique("ws")}),
    ("GET", "/v1/workspaces"): Declared(any_user()),
    ("GET", "/v1/workspaces/{workspace}"): Declared(member("reader")),
    ("DELETE", "/v1/workspaces/{workspace}"): Declared(member("owner"),
                                                       fresh=lambda w, c: {"workspace": w.workspace()}),
    ("POST", "/v1/workspaces/{workspace}/members"): Declared(member("owner"),
                                                             body={"user": SPARE_NAME, "role": "reader"}),
    ("GET", "/v1/workspaces/{workspace}/members"): Declared(member("reader")),
    ("DELETE", "/v1/workspaces/{workspace}/members/{user}"): Declared(
        member("owner"), fresh=lambda w, c: {"user": w.member()}),  # (a member may also leave: test_workspaces)
    # experiments
    ("GET", "/v1/workspaces/{workspace}/experiments"): Declared(member("reader")),
    ("GET", "/v1/workspaces/{workspace}/experiments/{experiment}"): Declared(member("reader")),
    ("GET", "/v1/workspaces/{workspace}/experiments/{experiment}/runs"): Declared(member("reader")),
    # runs (a run token: its own run and the runs under it)
    ("POST", "/v1/workspaces/{workspace}/runs"): Declared(  # a child of run A: what a run token may create
        member("contributor", ITS_RUN), body=lambda w, c: {"experiment": "exp", "parent_id": w.run_of(c)}),
    ("GET", RUN): Declared(member("reader", ITS_RUN)),
    ("PATCH", RUN + "/tags"): Declared(member("contributor", ITS_RUN), body={"tags": {"matrix": "1"}}),
    ("POST", RUN + "/properties"): Declared(member("contributor", ITS_RUN),
                                            body=lambda w, c: {"properties": {w.unique("p"): "1"}}),
    ("POST", RUN + "/status"): Declared(member("contributor", ITS_RUN), body={"status": "Completed"},
                                        fresh=lambda w, c: {"run_id": w.run()}),
    ("POST", RUN + "/cancel"): Declared(member("contributor", ITS_RUN), fresh=lambda w, c: {"run_id": w.run()}),
    ("POST", RUN + "/heartbeat"): Declared(member("contributor", ITS_RUN), body={}),
    ("GET", RUN + "/children"): Declared(member("reader", ITS_RUN)),
    # tracking
    ("POST", RUN + "/metrics"): Declared(member("contributor", ITS_RUN),
                                         body={"metrics": [{"name": "loss", "values": [0.5]}]}),
    ("GET", RUN + "/metrics"): Declared(member("reader", ITS_RUN)),
    ("GET", RUN + "/metric-history"): Declared(member("reader", ITS_RUN), query="name=loss"),
    ("GET", RUN + "/logs"): Declared(member("reader", ITS_RUN)),
    ("POST", RUN + "/logs/{stream}"): Declared(member("contributor", ITS_RUN), body={"text": "line\n"}),
    ("GET", RUN + "/logs/{stream}"): Declared(member("reader", ITS_RUN)),
    ("POST", RUN + "/outputs/uploads"): Declared(member("contributor", ITS_RUN), body={"paths": ["outputs/more.txt"]}),
    ("GET", RUN + "/outputs"): Declared(member("reader", ITS_RUN)),
    ("GET", RUN + "/outputs/download"): Declared(member("reader", ITS_RUN), query="path=outputs/model.bin"),
    ("POST", RUN + "/images"): Declared(member("contributor", ITS_RUN), body={"name": "plot"}),
    ("GET", RUN + "/images"): Declared(member("reader", ITS_RUN), query=lambda w, c: f"path={w.images[w.run_of(c)]}"),
    # snapshots (a run token: only its own run's snapshot, which run A was made from)
    ("POST", SNAPSHOTS + "/uploads"): Declared(member("contributor"), body=lambda w, c: {"files": w.snapshot_digests}),
    ("POST", SNAPSHOTS): Declared(member("contributor"), body=lambda w, c: {"files": w.snapshot_manifest}),
    ("GET", SNAPSHOTS + "/{snapshot_id}"): Declared(member("reader")),
    ("GET", SNAPSHOTS + "/{snapshot_id}/downloads"): Declared(member("reader", ITS_RUN)),
    # the model registry (a run token reads any version of its workspace, registers its own run's files)
    ("POST", MODEL + "/uploads"): Declared(member("contributor"), body={"files": [{"path": "w.json", "size": 2}]}),
    ("POST", MODEL + "/versions"): Declared(member("contributor", ITS_RUN),
                                            body=lambda w, c: {"run_id": w.run_of(c), "path": "outputs/model.bin"}),
    ("GET", "/v1/workspaces/{workspace}/models"): Declared(member("reader")),
    ("GET", MODEL): Declared(member("reader")),
    ("GET", MODEL + "/versions"): Declared(member("reader")),
    ("GET", VERSION): Declared(member("reader", ANY_RUN)),
    ("GET", VERSION + "/files"): Declared(member("reader", ANY_RUN)),
    ("PATCH", VERSION): Declared(member("contributor"), body={"tags": {"matrix": "1"}}),
    ("DELETE", VERSION): Declared(member("contributor"), fresh=lambda w, c: {"version": w.model_version()}),
    ("GET", MODEL + "/aliases"): Declared(member("reader")),
    ("PUT", MODEL + "/aliases/{alias}"): Declared(member("contributor"), body={"version": 1}),
    ("DELETE", MODEL + "/aliases/{alias}"): Declared(member("contributor"), fresh=lambda w, c: {"alias": w.alias()}),
    # endpoints: tokens of contributors manage them; only an endpoint key scores
    ("PUT", DEPLOYMENT): Declared(member("contributor"), body=lambda w, c: w.deploy_body,
                                  fresh=lambda w, c: {"endpoint": w.unique("ep")}),
    ("GET", "/v1/workspaces/{workspace}/endpoints"): Declared(member("reader")),
    ("GET", ENDPOINT): Declared(member("reader")),
    ("DELETE", ENDPOINT): Declared(member("contributor"), fresh=lambda w, c: {"endpoint": w.endpoint()}),
    ("GET", DEPLOYMENT): Declared(member("reader")),
    ("DELETE", DEPLOYMENT): Declared(member("contributor"), fresh=lambda w, c: {"endpoint": w.endpoint()}),
    ("GET", DEPLOYMENT + "/logs"): Declared(member("reader")),
    ("PUT", ENDPOINT + "/traffic"): Declared(member("contributor"), body={"traffic": {"blue": 100}}),
    ("GET", ENDPOINT + "/keys"): Declared(member("contributor")),
    ("POST", ENDPOINT + "/keys/regenerate"): Declared(member("contributor"), body={"key": "secondary"}),
    ("GET", ENDPOINT + "/telemetry"): Declared(member("reader")),
    ("POST", ENDPOINT + "/score"): Declared(endpoint_key_only(), body={"data": [1, 2]}),
    # environments (a run token reads any version of its workspace: its runner prepares its environment)
    ("POST", ENVIRONMENT): Declared(member("contributor"), body=ENV_DEFINITION),
    ("GET", "/v1/workspaces/{workspace}/environments"): Declared(member("reader")),
    ("GET", ENVIRONMENT + "/{version}"): Declared(member("reader", ANY_RUN)),
    ("PUT", ENVIRONMENT + "/{version}"): Declared(member("contributor"), body=ENV_DEFINITION),
    # compute targets
    ("POST", COMPUTES): Declared(member("contributor"),
                                 body=lambda w, c: {"name": w.unique("box"), "type": "instance"}),
    ("GET", COMPUTES): Declared(member("reader")),
    ("GET", COMPUTES + "/{name}"): Declared(member("reader")),
    ("DELETE", COMPUTES + "/{name}"): Declared(member("contributor"), fresh=lambda w, c: {"name": w.compute()}),
    ("POST", COMPUTES + "/{name}/claim"): Declared(member("contributor")),  # 204: run A left the queue
    # the API's own description: anyone, with or without a token
    ("GET", "/v1/openapi.json"): Declared({caller: P for caller in Caller}),
    # workspace secrets: set, listed and deleted by contributors; a value only to its own run's token
    ("PUT", SECRETS + "/{name}"): Declared(member("contributor"), body={"value": "s3cr3t-value"}),
    ("GET", SECRETS): Declared(member("contributor")),
    ("DELETE", SECRETS + "/{name}"): Declared(member("contributor"), fresh=lambda w, c: {"name": w.secret()}),
    ("GET", RUN + "/secrets/{name}"): Declared(run_tokens_only("contributor", ITS_RUN)),
    # datastores: registered and changed by contributors, seen by readers (never their keys)
    ("POST", DATASTORES): Declared(member("contributor"), body=lambda w, c: w.datastore_body(f"ds_{next(w.counter)}")),
    ("GET", DATASTORES): Declared(member("reader")),
    ("GET", DATASTORES + "/{name}"): Declared(member("reader")),
    ("PUT", DATASTORES + "/{name}/credentials"): Declared(member("contributor"),
                                                         body=lambda w, c: {"credentials": w.s3.keys}),
    ("DELETE", DATASTORES + "/{name}"): Declared(member("contributor"), fresh=lambda w, c: {"name": w.datastore()}),
    # a datastore's files: listed and downloaded by readers, uploaded by contributors, and by any run's token
    ("GET", DATASTORES + "/{name}/files"): Declared(member("reader", ANY_RUN)),
    ("POST", DATASTORES + "/{name}/downloads"): Declared(member("reader", ANY_RUN), body={"paths": ["seed.csv"]}),
    ("POST", DATASTORES + "/{name}/uploads"): Declared(member("contributor", ANY_RUN),
                                                     body={"files": [{"path": "new.csv", "size": 3}]}),
    ("POST", DATASTORES + "/{name}/uploads/parts"): Declared(member("contributor", ANY_RUN),
                                                           body=lambda w, c: {**w.multipart(), "part_numbers": [1]}),
    ("POST", DATASTORES + "/{name}/uploads/complete"): Declared(member("contributor", ANY_RUN),
                                                              body=lambda w, c: w.multipart(with_a_part=True)),
    ("POST", DATASTORES + "/{name}/uploads/abort"): Declared(member("contributor", ANY_RUN),
                                                           body=lambda w, c: w.multipart()),
    # datasets: registered by contributors (and runs), read by readers (and runs), unregistered by contributors
    ("POST", DATASETS): Declared(member("contributor", ANY_RUN), body=lambda w, c: {
        "name": w.unique("ds"), "type": "file", "paths": [{"datastore": DATASTORE_NAME, "path": "seed.csv"}]}),
    ("GET", DATASETS): Declared(member("reader", ANY_RUN)),
    ("GET", DATASETS + "/{name}/versions"): Declared(member("reader", ANY_RUN)),
    ("GET", DATASET_VERSION): Declared(member("reader", ANY_RUN)),
    ("GET", DATASET_VERSION + "/files"): Declared(member("reader", ANY_RUN)),
    ("POST", DATASET_VERSION + "/downloads"): Declared(member("reader", ANY_RUN), body={
        "files": [{"datastore": DATASTORE_NAME, "path": "seed.csv"}]}),
    ("GET", DATASET_VERSION + "/verification"): Declared(member("reader", ANY_RUN)),
    ("GET", DATASET_VERSION + "/runs"): Declared(member("reader", ANY_RUN)),
    ("GET", RUN + "/datasets"): Declared(member("reader", ITS_RUN)),
    ("DELETE", DATASET_VERSION): Declared(member("contributor"), fresh=lambda w, c: w.dataset_version()),
    ("GET", "/v1/workspaces/{workspace}/default-datastore"): Declared(member("reader")),
    ("PUT", "/v1/workspaces/{workspace}/default-datastore"): Declared(member("contributor"),
                                                                      body={"name": "workspaceblobstore"}),
    # the audit log: owners, and admins who are not members
    ("GET", "/v1/workspaces/{workspace}/audit"): Declared({**member("owner"), Caller.ADMIN: P}),
}


# --- the seeded world ------------------------------------------------------------------------------------
class World:
    """One platform on the local backend, seeded through the API, with the credentials of every caller."""

    def __init__(self, services, client: Client, s3):
        self.services, self.client, self.s3 = services, client, s3
        self.counter = itertools.count(1)
        self.principals = {name: Principal(name, False, "seed") for name in (OWNER_NAME, CONTRIBUTOR_NAME)}
        self.run_tokens: dict[str, str] = {}
        self.tokens = {Caller.ADMIN: services.identity.bootstrap_admin()}
        for caller, name in ((Caller.OWNER, OWNER_NAME), (Caller.CONTRIBUTOR, CONTRIBUTOR_NAME),
                             (Caller.READER, READER_NAME), (Caller.NON_MEMBER, STRANGER_NAME), (None, SPARE_NAME),
                             (Caller.DEMOTED_RUN, DEMOTED_NAME), (Caller.DEPARTED_RUN, DEPARTED_NAME)):
            services.identity.create_user(name)
            if caller is not None:  # (the demoted and the departed submit with theirs; runs get their own)
                self.tokens[caller] = services.identity.create_token(name)["token"]
        owner, contributor = self.tokens[Caller.OWNER], self.tokens[Caller.CONTRIBUTOR]
        base = f"/v1/workspaces/{WS}"
        for name in (WS, ELSEWHERE):
            self.ok("POST", "/v1/workspaces", {"name": name}, owner)
        for name, role in ((CONTRIBUTOR_NAME, "contributor"), (READER_NAME, "reader"), (SPARE_NAME, "reader"),
                           (DEMOTED_NAME, "contributor"), (DEPARTED_NAME, "contributor")):
            self.ok("POST", f"{base}/members", {"user": name, "role": role}, owner)
        self.spare_token_id = self.spare_token()  # the shared {token_id}: never the token a caller sends
        services.workspace_secrets.set(self.principals[OWNER_NAME], WS, SECRET_NAME, "s3cr3t-value")
        self.ok("POST", f"{base}/datastores", self.datastore_body(DATASTORE_NAME), owner)
        self.s3.client().put_object(Bucket=self.s3.bucket, Key=f"{DATASTORE_PREFIX}/seed.csv", Body=b"a,b\n")
        self.ok("POST", f"{base}/datasets", {"name": DATASET_NAME, "type": "file",
                                              "paths": [{"datastore": DATASTORE_NAME, "path": "seed.csv"}]}, owner)

        # A snapshot holding the scoring script, and an instance target whose agent claims run A
        digest = hashlib.sha256(SCORE_PY).hexdigest()
        self.snapshot_digests = [{"digest": digest, "size": len(SCORE_PY)}]
        self.snapshot_manifest = [{"path": "score.py", "digest": digest, "size": len(SCORE_PY)}]
        uploads = self.ok("POST", f"{base}/snapshots/uploads", {"files": self.snapshot_digests}, contributor)
        for item in uploads["uploads"]:
            self.put(item["url"], SCORE_PY)
        self.snapshot_id = self.ok("POST", f"{base}/snapshots", {"files": self.snapshot_manifest}, contributor)["id"]
        self.ok("POST", f"{base}/computes", {"name": "agents", "type": "instance"}, contributor)

        # Run A: submitted from the snapshot, claimed (its run token minted by the claim), running, with a child
        self.images: dict[str, str] = {}
        self.run_a = self.submit(contributor)
        claimed = self.ok("POST", f"{base}/computes/agents/claim", None, contributor)
        assert claimed["run"]["id"] == self.run_a
        self.run_tokens[self.run_a] = claimed["run_token"]
        self.ok("POST", f"{base}/runs/{self.run_a}/status", {"status": "Running"}, claimed["run_token"])
        child = {"experiment": "exp", "parent_id": self.run_a, "status": "Running"}
        self.child = self.ok("POST", f"{base}/runs", child, claimed["run_token"])["id"]
        self.record(self.run_a)
        # The runs of the demoted and the departed: submitted while they were contributors, running, then the
        # owner makes one a reader and removes the other
        self.runs_of = {Caller.OWN_RUN: self.run_a}
        for caller, name in ((Caller.DEMOTED_RUN, DEMOTED_NAME), (Caller.DEPARTED_RUN, DEPARTED_NAME)):
            run_id = self.runs_of[caller] = self.submit(self.tokens[caller])
            services.runs.transition(WS, run_id, "Running")
            self.tokens[caller] = self.run_token(run_id, user=name)
            self.record(run_id)
        self.ok("POST", f"{base}/members", {"user": DEMOTED_NAME, "role": "reader"}, owner)
        self.ok("DELETE", f"{base}/members/{DEPARTED_NAME}", None, owner)
        # Run B in the same workspace, and a run of another workspace, each with its own run token
        running = {"experiment": "exp", "status": "Running"}
        self.run_b = self.ok("POST", f"{base}/runs", running, contributor)["id"]
        self.tokens[Caller.OTHER_RUN] = self.run_token(self.run_b)
        self.foreign_run = self.ok("POST", f"/v1/workspaces/{ELSEWHERE}/runs", running, owner)["id"]
        self.tokens[Caller.FOREIGN_RUN] = services.identity.create_run_token(self.foreign_run, ELSEWHERE, OWNER_NAME)

        # A model version registered from run A's files, an alias, an environment
        self.ok("POST", f"{base}/models/doubler/versions", {"run_id": self.run_a, "path": "outputs/model.bin"},
                contributor)
        self.ok("PUT", f"{base}/models/doubler/aliases/prod", {"version": 1}, contributor)
        self.ok("POST", f"{base}/environments/env/versions", ENV_DEFINITION, contributor)

        # The endpoint `calc` with its deployment `blue` live on a local scoring host, and its key
        self.deploy_body = {"models": ["doubler:1"], "snapshot_id": self.snapshot_id, "entry_script": "score.py"}
        self.deploy("calc")
        keys = self.ok("GET", f"{base}/endpoints/calc/keys", None, contributor)
        self.tokens[Caller.ENDPOINT_KEY] = keys["primary_key"]

    # --- requests -------------------------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        response = getattr(self.client.http, method.lower())(
            path, headers=headers, body=json.dumps(body) if body is not None else None)
        return response.status_code, json.loads(response.body) if response.body else None

    def ok(self, method: str, path: str, body: Any, token: str) -> Any:
        status, answer = self.call(method, path, body, token)
        assert status in (200, 201, 202), (method, path, status, answer)
        return answer

    def put(self, url: str, data: bytes) -> None:
        assert transfer("local", self.services, "PUT", url, data)[0] == 200

    def submit(self, token: str) -> str:
        """A run submitted from the snapshot to the instance target, queued there (no agent runs it)."""
        return self.ok("POST", f"/v1/workspaces/{WS}/runs", {
            "experiment": "exp", "snapshot_id": self.snapshot_id,
            "run_config": {"script": "score.py", "compute": "agents"}}, token)["id"]

    def record(self, run_id: str) -> None:
        """What the run's routes read, written with its own token: an output file, a metric, a log line, an image."""
        token, path = self.run_tokens[run_id], f"/v1/workspaces/{WS}/runs/{run_id}"
        for item in self.ok("POST", f"{path}/outputs/uploads", {"paths": ["outputs/model.bin"]}, token)["uploads"]:
            self.put(item["url"], b"weights")
        self.ok("POST", f"{path}/metrics", {"metrics": [{"name": "loss", "values": [1.0]}]}, token)
        self.ok("POST", f"{path}/logs/stdout", {"text": "hello\n"}, token)
        image = self.ok("POST", f"{path}/images", {"name": "plot"}, token)
        self.put(image["url"], b"\x89PNG\r\n")
        self.images[run_id] = image["path"]

    def deploy(self, endpoint: str) -> None:
        path = f"/v1/workspaces/{WS}/endpoints/{endpoint}/deployments/blue"
        state = self.ok("PUT", path, self.deploy_body, self.tokens[Caller.CONTRIBUTOR])["state"]
        for _ in range(200):  # each look takes a rollout further
            if state not in ("Creating", "Updating"):
                break
            state = self.ok("GET", path, None, self.tokens[Caller.CONTRIBUTOR])["state"]
        assert state == "Succeeded", state

    # --- what a case sends --------------------------------------------------------------------------
    def token_of(self, caller: Caller, params: dict[str, str]) -> str | None:
        if caller is Caller.NO_TOKEN:
            return None
        if caller is Caller.BAD_TOKEN:
            return UNKNOWN_TOKEN
        if caller is Caller.OWN_RUN:
            return self.run_token(params.get("run_id", self.run_a))
        return self.tokens[caller]

    def run_of(self, caller: Caller) -> str:
        """The run a case is about: the caller's own for the demoted's and departed's tokens, else run A."""
        return self.runs_of.get(caller, self.run_a)

    def path_params(self, path: str, caller: Caller) -> dict[str, str]:
        """Existing objects for every path parameter, so a permitted caller never meets a 404."""
        names = {"/models/": "doubler", "/environments/": "env", "/computes/": "agents", "/secrets/": SECRET_NAME,
                 "/datastores/": DATASTORE_NAME, "/datasets/": DATASET_NAME}
        return {"workspace": WS, "run_id": self.run_of(caller), "experiment": "exp", "endpoint": "calc",
                "deployment": "blue",
                "stream": "stdout", "snapshot_id": self.snapshot_id, "alias": "prod", "version": "1",
                "user": SPARE_NAME if "/members/" in path else READER_NAME, "token_id": self.spare_token_id,
                "name": next((v for k, v in names.items() if k in path), "")}

    def run_token(self, run_id: str, user: str = CONTRIBUTOR_NAME) -> str:
        """The run's token, minted for its submitter as a dispatcher does."""
        if run_id not in self.run_tokens:
            self.run_tokens[run_id] = self.services.identity.create_run_token(run_id, WS, user)
        return self.run_tokens[run_id]

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"

    # --- fresh targets, for the permitted callers of routes that consume theirs --------------------------
    def spare_token(self) -> str:
        return self.services.identity.create_token(READER_NAME, name="spare")["token_id"]

    def workspace(self) -> str:
        name = self.unique("gone")
        self.services.workspaces.create(self.principals[OWNER_NAME], name)
        return name

    def member(self) -> str:
        name = self.unique("member")
        self.services.identity.create_user(name)
        self.services.workspaces.add_member(self.principals[OWNER_NAME], WS, name, "reader")
        return name

    def run(self) -> str:
        return self.services.runs.create(self.principals[CONTRIBUTOR_NAME], WS, "exp", status="Running")["id"]

    def model_version(self) -> str:
        version = self.services.registry.register(self.principals[CONTRIBUTOR_NAME], WS, "doubler", run_id=self.run_a,
                                                  path="outputs/model.bin")
        return str(version["version"])

    def alias(self) -> str:
        name = self.unique("alias")
        self.services.registry.set_alias(self.principals[CONTRIBUTOR_NAME], WS, "doubler", name, 1)
        return name

    def endpoint(self) -> str:
        name = self.unique("ep")
        self.deploy(name)
        return name

    def secret(self) -> str:
        name = self.unique("secret")
        self.services.workspace_secrets.set(self.principals[OWNER_NAME], WS, name, "s3cr3t-value")
        return name

    def datastore_body(self, name: str) -> dict:
        """An s3 datastore on the second S3 (its connection check passes)."""
        return {"name": name, "type": "s3", "credentials": self.s3.keys,
                "settings": {"bucket": self.s3.bucket, "endpoint_url": self.s3.url, "prefix": DATASTORE_PREFIX}}

    def multipart(self, with_a_part: bool = False) -> dict:
        """A multipart upload started on the datastore's store, with its first part sent when asked."""
        client, path = self.s3.client(), f"big-{next(self.counter)}.bin"
        key = f"{DATASTORE_PREFIX}/{path}"
        upload_id = client.create_multipart_upload(Bucket=self.s3.bucket, Key=key)["UploadId"]
        body = {"path": path, "upload_id": upload_id}
        if with_a_part:
            etag = client.upload_part(Bucket=self.s3.bucket, Key=key, UploadId=upload_id, PartNumber=1,
                                      Body=b"x")["ETag"]
            body["parts"] = [{"part_number": 1, "etag": etag}]
        return body

    def datastore(self) -> str:
        name = f"ds_{next(self.counter)}"
        body = self.datastore_body(name)
        self.services.datastores.register(self.principals[OWNER_NAME], WS, name, "s3", body["settings"],
                                          body["credentials"])
        return name

    def dataset_version(self) -> dict[str, str]:
        """A dataset of its own with one version, for a caller that unregisters it."""
        name = self.unique("gone-ds")
        self.services.datasets.register(self.principals[OWNER_NAME], WS, name, "file",
                                        [{"datastore": DATASTORE_NAME, "path": "seed.csv"}])
        return {"name": name, "version": "1"}

    def compute(self) -> str:
        name = self.unique("box")
        self.services.compute_targets.create(self.principals[CONTRIBUTOR_NAME], WS, name, "instance", {})
        return name


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_compatible):
    settings = Settings(backend="local", home=tmp_path_factory.mktemp("matrix"), public_url="http://127.0.0.1:9")
    services = build_services(settings, local_workers=True)  # runs go to the instance target: nothing executes
    service_locator.use(services)
    services.host.start()
    try:
        with Client(app) as client:
            yield World(services, client, s3_compatible)
    finally:
        services.host.stop()
        service_locator.use(None)


# --- the tests -------------------------------------------------------------------------------------------
def declared_routes() -> list[tuple[str, str]]:
    return [(method, spec.path) for spec in ROUTES for method in spec.methods]


def test_every_route_is_declared_and_every_declaration_is_a_route():
    routes = declared_routes()
    assert len(routes) == len(set(routes)), "a (method, path) is registered twice"
    undeclared = [f"{m} {p}" for m, p in routes if (m, p) not in DECLARED]
    assert not undeclared, f"routes without a declaration in DECLARED (test_authorization_matrix.py): {undeclared}"
    gone = [f"{m} {p}" for m, p in DECLARED if (m, p) not in set(routes)]
    assert not gone, f"declarations of routes that no longer exist: {gone}"
    incomplete = [f"{m} {p}" for (m, p), d in DECLARED.items() if set(d.access) != set(Caller)]
    assert not incomplete, f"declarations that leave a caller out: {incomplete}"


def outcome_of(status: int, answer: Any, declared: Declared) -> Outcome | None:
    if status == 401 and answer["code"] == "Unauthorized":
        return Outcome.UNAUTHENTICATED
    if status == 403 and answer["code"] == "Forbidden":
        return Outcome.FORBIDDEN
    if status == 404 and answer["message"] == f"workspace {WS!r} not found":
        return Outcome.HIDDEN
    return Outcome.PERMITTED if status in declared.permitted else None


def value(declared_value: Any, world: World, caller: Caller) -> Any:
    return declared_value(world, caller) if callable(declared_value) else declared_value


@pytest.mark.parametrize("method, path, caller", [(m, p, c) for m, p in declared_routes() for c in Caller],
                         ids=lambda v: v.value if isinstance(v, Caller) else str(v))
def test_each_caller_gets_the_declared_outcome(world, method, path, caller):
    declared = DECLARED.get((method, path))
    assert declared is not None, f"{method} {path} has no declaration in DECLARED"
    expected = declared.access[caller]
    params = world.path_params(path, caller)
    if expected is Outcome.PERMITTED and declared.fresh is not None:
        params.update(declared.fresh(world, caller))
    url = path.format(**params)
    query = value(declared.query, world, caller)
    url += f"?{query}" if query else ""

    status, answer = world.call(method, url, value(declared.body, world, caller), world.token_of(caller, params))

    assert status < 500, (method, url, caller.value, status, answer)
    got = outcome_of(status, answer, declared)
    assert got is expected, f"{method} {url} as {caller.value}: declared {expected.name}, answered {status} {answer}"


# --- what the matrix's one run per caller does not show ----------------------------------------------------
def test_an_endpoint_key_scores_its_own_endpoint_only(world):
    other = world.endpoint()
    keys = {name: world.ok("GET", f"/v1/workspaces/{WS}/endpoints/{name}/keys", None,
                           world.tokens[Caller.CONTRIBUTOR]) for name in ("calc", other)}
    for endpoint, key_of in itertools.product(("calc", other), ("calc", other)):
        for key in ("primary_key", "secondary_key"):
            status, answer = world.call("POST", f"/v1/workspaces/{WS}/endpoints/{endpoint}/score", {"data": [1]},
                                        keys[key_of][key])
            expected = 200 if endpoint == key_of else 401
            assert status == expected, (endpoint, key_of, key, status, answer)


def test_a_run_token_reaches_down_its_run_tree_never_up_or_across(world):
    run = f"/v1/workspaces/{WS}/runs"
    child_token = world.run_token(world.child)
    assert world.call("GET", f"{run}/{world.child}", None, world.run_tokens[world.run_a])[0] == 200
    assert world.call("POST", f"{run}/{world.child}/metrics", {"metrics": [{"name": "m", "values": [1]}]},
                      world.run_tokens[world.run_a])[0] == 200
    assert world.call("GET", f"{run}/{world.run_a}", None, child_token)[0] == 403
    assert world.call("GET", f"{run}/{world.child}", None, world.tokens[Caller.OTHER_RUN])[0] == 403


def test_a_run_token_follows_its_submitters_current_role(world):
    owner, base = world.tokens[Caller.OWNER], f"/v1/workspaces/{WS}"
    world.services.identity.create_user("mover")
    world.ok("POST", f"{base}/members", {"user": "mover", "role": "contributor"}, owner)
    run_id = world.submit(world.services.identity.create_token("mover")["token"])
    world.services.runs.transition(WS, run_id, "Running")
    token, metrics = world.run_token(run_id, user="mover"), f"{base}/runs/{run_id}/metrics"
    point = {"metrics": [{"name": "m", "values": [1]}]}
    assert world.call("POST", metrics, point, token)[0] == 200

    world.ok("POST", f"{base}/members", {"user": "mover", "role": "reader"}, owner)
    status, refused = world.call("POST", metrics, point, token)
    assert status == 403 and "'mover'" in refused["message"] and "contributor" in refused["message"], refused
    assert world.call("GET", metrics, None, token)[0] == 200

    world.ok("POST", f"{base}/members", {"user": "mover", "role": "contributor"}, owner)
    assert world.call("POST", metrics, point, token)[0] == 200

    world.ok("DELETE", f"{base}/members/mover", None, owner)
    status, refused = world.call("GET", metrics, None, token)
    assert status == 403 and "no longer a member" in refused["message"], refused


# (routes for run tokens alone refuse a person before looking the run up: they have nothing to find)
RUN_ROUTES = [route for route in declared_routes()
              if "{run_id}" in route[1] and DECLARED[route].access[Caller.CONTRIBUTOR] is P]


@pytest.mark.parametrize("method, path", RUN_ROUTES, ids=[f"{method} {path}" for method, path in RUN_ROUTES])
def test_a_run_of_another_workspace_is_not_found_through_this_one(world, method, path):
    """Runs are stored by id alone: each run route must check the run belongs to the path's workspace."""
    declared = DECLARED[(method, path)]
    url = path.format(**{**world.path_params(path, Caller.CONTRIBUTOR), "run_id": world.foreign_run})
    query = value(declared.query, world, Caller.CONTRIBUTOR)
    body = value(declared.body, world, Caller.CONTRIBUTOR)
    status, answer = world.call(method, url + (f"?{query}" if query else ""), body, world.tokens[Caller.CONTRIBUTOR])
    assert status == 404 and answer["message"] == f"run {world.foreign_run!r} not found in workspace {WS!r}", \
        (method, url, status, answer)


HIDDEN_ROUTES = [route for route, declared in DECLARED.items() if declared.access[Caller.NON_MEMBER] is H]


@pytest.mark.parametrize("method, path", HIDDEN_ROUTES, ids=[f"{method} {path}" for method, path in HIDDEN_ROUTES])
def test_a_non_member_cannot_tell_a_workspace_from_one_that_does_not_exist(world, method, path):
    declared = DECLARED[(method, path)]
    body = value(declared.body, world, Caller.NON_MEMBER)
    answers = []
    for workspace in (WS, "nowhere"):
        url = path.format(**{**world.path_params(path, Caller.NON_MEMBER), "workspace": workspace})
        status, answer = world.call(method, url, body, world.tokens[Caller.NON_MEMBER])
        answers.append((status, json.dumps(answer).replace(repr(workspace), "<workspace>")))
    assert answers[0] == answers[1] and answers[0][0] == 404, answers
