"""Compute targets on both backends: create, list, show, delete, submissions to them, agents' claims."""
from __future__ import annotations

import hashlib
import threading

import pytest

from chalicelib.compute.instance_queue import LEASE_SECONDS
from chalicelib.compute.target_dispatcher import TargetDispatcher
from chalicelib.domain import table_keys
from chalicelib.store.table import Update
from tests.server.api.helpers import all_at_once
from tests.server.api.test_submit import RecordingDispatcher
from tests.server.unit.fake_provisioner import StagedProvisioner

WS = "/v1/workspaces/team"
COMPUTES = f"{WS}/computes"
QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/shared"
CLUSTER = {"provisioning": "EC2", "max_vcpus": 8, "max_job_vcpus": 2, "subnets": ["subnet-0123456789abcdef0"],
           "security_group_ids": ["sg-0123456789abcdef0"]}


@pytest.fixture
def local_jobs(services):
    """The deployment runs local and instance targets; local jobs are only recorded."""
    recorded = RecordingDispatcher()
    services.dispatcher = TargetDispatcher({"local": recorded, "instance": services.instance_queue})
    return recorded


@pytest.fixture
def provisioner(services):
    services.provisioner = StagedProvisioner()
    return services.provisioner


@pytest.fixture
def snapshot_id(api, services, local_jobs):
    """A workspace `team` holding a one-file snapshot."""
    api.ok("POST", "/v1/workspaces", {"name": "team"})
    content = b"print('hello')\n"
    digest = hashlib.sha256(content).hexdigest()
    prefix = services.workspaces.record("team")["blob_prefix"]
    services.ctx.blobs.put_bytes(f"{prefix}snapshots/content/{digest}", content)
    return api.ok("POST", f"{WS}/snapshots", {"files": [{"path": "train.py", "digest": digest,
                                                          "size": len(content)}]})["id"]


def submit(api, snapshot_id, compute="local", **config):
    run_config = {"script": "train.py", "compute": compute, **config}
    return api.call("POST", f"{WS}/runs", {"experiment": "exp", "snapshot_id": snapshot_id, "run_config": run_config})


def test_an_instance_target_is_created_listed_shown_and_deleted(api, snapshot_id):
    created = api.ok("POST", COMPUTES, {"name": "gpu-box", "type": "instance"}, status=201)
    assert created["state"] == "Succeeded" and created["settings"] == {"max_concurrent_runs": 1}
    assert created["created_by"] == "admin"

    listed = api.ok("GET", COMPUTES)["computes"]
    assert [(c["name"], c["type"]) for c in listed] == [("local", "local"), ("gpu-box", "instance")]
    shown = api.ok("GET", f"{COMPUTES}/gpu-box")
    assert shown["type"] == "instance" and shown["active_runs"] == 0

    assert api.ok("DELETE", f"{COMPUTES}/gpu-box") == {"name": "gpu-box", "deleted": True}
    status, body = api.call("GET", f"{COMPUTES}/gpu-box")
    assert status == 404 and "gpu-box" in body["message"]
    status, _ = api.call("DELETE", f"{COMPUTES}/gpu-box")
    assert status == 404


@pytest.mark.parametrize("body, field", [
    ({"name": "box", "type": "instance", "settings": {"max_concurrent_runs": "2"}}, "settings.max_concurrent_runs"),
    ({"name": "box", "type": "instance", "settings": {"max_concurrent_runs": 0}}, "settings.max_concurrent_runs"),
    ({"name": "box", "type": "instance", "settings": {"max_vcpus": 4}}, "settings.max_vcpus"),
    ({"name": "box", "type": "kubernetes"}, "type"),
    ({"name": "Box!", "type": "instance"}, "name"),
    ({"name": "box", "type": "batch", "settings": {**CLUSTER, "max_vcpus": -1}}, "settings.max_vcpus"),
    ({"name": "box", "type": "batch", "settings": {**CLUSTER, "min_vcpus": 9}}, "settings.min_vcpus"),
    ({"name": "box", "type": "batch", "settings": {**CLUSTER, "max_job_vcpus": 64}}, "settings.max_job_vcpus"),
    ({"name": "box", "type": "batch", "settings": {**CLUSTER, "subnets": ["nope"]}}, "settings.subnets[0]"),
    ({"name": "box", "type": "batch", "settings": {**CLUSTER, "provisioning": "FARGATE",
                                                   "instance_types": ["c5.large"]}}, "settings.instance_types"),
    ({"name": "box", "type": "batch", "settings": {"max_vcpus": 4}}, "settings.provisioning"),
    ({"name": "box", "type": "batch", "settings": {"job_queue_arn": "queue"}}, "settings.job_queue_arn"),
    ({"name": "box", "type": "batch", "settings": {"job_queue_arn": QUEUE_ARN, "max_vcpus": 4}}, "settings.max_vcpus"),
])
def test_bad_input_is_refused_naming_the_field(api, snapshot_id, provisioner, body, field):
    status, answer = api.call("POST", COMPUTES, body)
    assert (status, answer.get("field")) == (400, field), answer
    assert provisioner.started == []
    assert [c["name"] for c in api.ok("GET", COMPUTES)["computes"]] == ["local"]


def test_local_is_built_in(api, snapshot_id):
    status, body = api.call("POST", COMPUTES, {"name": "local", "type": "instance"})
    assert status == 409 and body["field"] == "name"
    status, body = api.call("DELETE", f"{COMPUTES}/local")
    assert status == 400 and body["field"] == "name"
    _, run = submit(api, snapshot_id)
    assert run["compute_target"] == "local"
    shown = api.ok("GET", f"{COMPUTES}/local")
    assert (shown["type"], shown["state"], shown["active_runs"]) == ("local", "Succeeded", 1)


def test_a_name_is_taken_once_and_readers_cannot_create(api, snapshot_id, user_token):
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance"})
    status, body = api.call("POST", COMPUTES, {"name": "box", "type": "instance"})
    assert status == 409 and body["field"] == "name"
    token = user_token("rita")
    api.ok("POST", f"{WS}/members", {"user": "rita", "role": "reader"})
    assert api.call("POST", COMPUTES, {"name": "other", "type": "instance"}, token=token)[0] == 403
    assert len(api.ok("GET", COMPUTES, token=token)["computes"]) == 2


def test_batch_needs_a_provisioner(api, snapshot_id, services):
    services.provisioner = None
    status, body = api.call("POST", COMPUTES, {"name": "cluster", "type": "batch", "settings": CLUSTER})
    assert status == 400 and body["field"] == "type" and "not configured" in body["message"]


def test_a_batch_target_records_what_was_provisioned_and_deletes_only_that(api, snapshot_id, provisioner):
    status, made = api.call("POST", COMPUTES, {"name": "cluster", "type": "batch", "settings": CLUSTER})
    assert status == 202 and made["state"] == "Creating" and made["step"] == "compute_environment"
    assert made["settings"] == {**CLUSTER, "instance_types": ["optimal"], "min_vcpus": 0, "vcpus": 1,
                                "memory_mb": 2048, "gpus": 0}
    assert provisioner.queues == []  # the request only asked for the compute environment
    shown = api.ok("GET", f"{COMPUTES}/cluster")  # reading it takes it as far as it goes: here, to the end
    assert shown["state"] == "Succeeded" and "step" not in shown
    assert shown["resources"] == {"compute_environment_arn": "arn:ce/cluster", "name": "cluster", "created": True,
                                  "job_queue_arn": "arn:jq/cluster"}
    status, attached = api.call("POST", COMPUTES, {"name": "shared", "type": "batch",
                                                    "settings": {"job_queue_arn": QUEUE_ARN}})
    assert status == 201 and attached["state"] == "Succeeded"
    assert attached["resources"] == {"job_queue_arn": QUEUE_ARN, "created": False}

    api.ok("DELETE", f"{COMPUTES}/shared")
    api.ok("DELETE", f"{COMPUTES}/cluster")
    assert provisioner.dismantled == [shown["resources"]]


def test_a_failed_provisioning_leaves_a_failed_target_whose_name_can_be_reused(api, snapshot_id, provisioner):
    provisioner.refuse = "subnet-0123456789abcdef0 does not exist"
    status, body = api.call("POST", COMPUTES, {"name": "cluster", "type": "batch", "settings": CLUSTER})
    assert status == 400 and body["field"] == "settings.subnets"
    shown = api.ok("GET", f"{COMPUTES}/cluster")
    assert shown["state"] == "Failed" and "does not exist" in shown["error"]["message"]
    status, body = submit(api, snapshot_id, "cluster")
    assert status == 400 and body["field"] == "run_config.compute" and "Failed" in body["message"]

    provisioner.refuse = None
    assert api.call("POST", COMPUTES, {"name": "cluster", "type": "batch", "settings": CLUSTER})[0] == 202
    assert api.ok("GET", f"{COMPUTES}/cluster")["state"] == "Succeeded"


def test_submissions_name_a_known_target_and_stay_within_its_limits(api, services, snapshot_id, provisioner):
    status, body = submit(api, snapshot_id, "nowhere")
    assert status == 400 and body["field"] == "run_config.compute"

    # A target of another workspace is not found from this one
    api.ok("POST", "/v1/workspaces", {"name": "elsewhere"})
    api.ok("POST", "/v1/workspaces/elsewhere/computes", {"name": "theirs", "type": "instance"})
    status, body = submit(api, snapshot_id, "theirs")
    assert status == 400 and body["field"] == "run_config.compute"

    api.ok("POST", COMPUTES, {"name": "cluster", "type": "batch", "settings": CLUSTER}, status=202)
    api.ok("GET", f"{COMPUTES}/cluster")
    status, body = submit(api, snapshot_id, "cluster", resources={"vcpus": 4})
    assert status == 400 and body["field"] == "run_config.resources.vcpus" and "max_job_vcpus" in body["message"]
    # Without a batch dispatcher here, a valid request names the target as what cannot run
    status, body = submit(api, snapshot_id, "cluster", resources={"vcpus": 2})
    assert status == 400 and body["field"] == "run_config.compute" and "batch" in body["message"]
    assert api.ok("GET", f"{COMPUTES}/cluster")["active_runs"] == 0


def test_a_run_on_an_instance_target_is_queued_and_recorded(api, services, snapshot_id):
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance"})
    status, run = submit(api, snapshot_id, "box", node_count=1, resources={"gpus": 1})
    assert status == 201 and run["status"] == "Queued" and run["compute_target"] == "box"
    assert api.ok("GET", f"{WS}/runs/{run['id']}")["compute_target"] == "box"
    assert [i["sk"] for i in services.ctx.table.query_all(_query("QUEUE#team#box"))] == [run["id"]]

    # Canceling it takes it off the queue and off the target's active runs
    api.ok("POST", f"{WS}/runs/{run['id']}/cancel")
    assert list(services.ctx.table.query_all(_query("QUEUE#team#box"))) == []
    assert api.ok("GET", f"{COMPUTES}/box")["active_runs"] == 0
    assert api.call("POST", f"{COMPUTES}/box/claim")[0] == 204


def test_a_target_with_active_runs_is_not_deleted_until_they_end(api, snapshot_id):
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance"})
    runs = [submit(api, snapshot_id, "box")[1] for _ in range(2)]
    status, body = api.call("DELETE", f"{COMPUTES}/box")
    assert status == 409 and all(r["id"] in body["message"] for r in runs)
    assert body["details"]["active_runs"] == [r["id"] for r in runs]
    shown = api.ok("GET", f"{COMPUTES}/box")
    assert shown["state"] == "Succeeded" and shown["active_runs"] == 2  # the refused delete left it usable

    # The first run ends through its runner's own report, the second by a cancel
    claimed = api.ok("POST", f"{COMPUTES}/box/claim")
    token = claimed["run_token"]
    for status_name in ("Running", "Completed"):
        api.ok("POST", f"{WS}/runs/{claimed['run']['id']}/status", {"status": status_name}, token=token)
    assert api.call("DELETE", f"{COMPUTES}/box")[0] == 409
    api.ok("POST", f"{WS}/runs/{runs[1]['id']}/cancel")
    api.ok("DELETE", f"{COMPUTES}/box")


def test_claim_hands_out_the_oldest_run_with_a_token_for_it(api, snapshot_id, services):
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance"})
    first, second = (submit(api, snapshot_id, "box")[1] for _ in range(2))
    claimed = api.ok("POST", f"{COMPUTES}/box/claim")
    assert claimed["run"]["id"] == first["id"] and claimed["run"]["status"] == "Queued"
    assert api.ok("GET", "/v1/whoami", token=claimed["run_token"])["run_id"] == first["id"]
    # A run failed while queued is skipped
    api.ok("POST", f"{WS}/runs/{second['id']}/status", {"status": "Failed"})
    assert api.call("POST", f"{COMPUTES}/box/claim") == (204, None)


def test_claim_is_for_instance_targets_and_contributors(api, snapshot_id, provisioner, user_token):
    api.ok("POST", COMPUTES, {"name": "cluster", "type": "batch", "settings": CLUSTER}, status=202)
    for name in ("cluster", "local"):
        status, body = api.call("POST", f"{COMPUTES}/{name}/claim")
        assert status == 400 and body["field"] == "name"
    assert api.call("POST", f"{COMPUTES}/nowhere/claim")[0] == 404
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance"})
    token = user_token("rita")
    api.ok("POST", f"{WS}/members", {"user": "rita", "role": "reader"})
    assert api.call("POST", f"{COMPUTES}/box/claim", token=token)[0] == 403


def _moving_clock(services) -> list[float]:
    now = [services.ctx.clock()]
    services.ctx.clock = lambda: now[0]
    return now


def test_a_leased_run_is_not_handed_to_a_second_agent(api, services, snapshot_id):
    now = _moving_clock(services)
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance", "settings": {"max_concurrent_runs": 2}})
    first = submit(api, snapshot_id, "box")[1]
    now[0] += 1  # run ids are time-ordered: the queue's order is the submissions'
    second = submit(api, snapshot_id, "box")[1]
    assert api.ok("POST", f"{COMPUTES}/box/claim")["run"]["id"] == first["id"]
    # The first run stays queued, leased to the first agent: a second agent gets the next run, then nothing
    now[0] += LEASE_SECONDS - 1
    assert api.ok("POST", f"{COMPUTES}/box/claim")["run"]["id"] == second["id"]
    assert api.call("POST", f"{COMPUTES}/box/claim") == (204, None)
    assert api.ok("GET", f"{WS}/runs/{first['id']}")["status"] == "Queued"
    assert [i["sk"] for i in services.ctx.table.query_all(_query("QUEUE#team#box"))] == [first["id"], second["id"]]


def test_a_run_whose_lease_lapses_is_claimed_again_and_the_first_token_stops_working(api, services, snapshot_id):
    # Given an agent that claimed a run and died before starting its runner
    now = _moving_clock(services)
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance"})
    run = submit(api, snapshot_id, "box")[1]
    lost = api.ok("POST", f"{COMPUTES}/box/claim")
    assert api.call("POST", f"{COMPUTES}/box/claim") == (204, None)

    # When its lease lapses, then the next claim gets the same run with a fresh token
    now[0] += LEASE_SECONDS + 1
    again = api.ok("POST", f"{COMPUTES}/box/claim")
    assert again["run"]["id"] == run["id"] and again["run"]["status"] == "Queued"
    assert again["run_token"] != lost["run_token"]
    assert api.call("POST", f"{COMPUTES}/box/claim") == (204, None)  # leased anew

    # The first claim's runner, starting late, is refused; the second one's reports are taken
    assert api.call("GET", f"{WS}/runs/{run['id']}", token=lost["run_token"])[0] == 401
    path = f"{WS}/runs/{run['id']}/status"
    assert api.call("POST", path, {"status": "Preparing"}, token=lost["run_token"])[0] == 401
    assert api.ok("POST", path, {"status": "Preparing"}, token=again["run_token"])["status"] == "Preparing"

    # Leaving Queued took it off the queue
    assert list(services.ctx.table.query_all(_query("QUEUE#team#box"))) == []
    now[0] += LEASE_SECONDS + 1
    assert api.call("POST", f"{COMPUTES}/box/claim") == (204, None)


def test_a_run_that_left_queued_is_removed_from_the_queue_at_the_next_claim(api, services, snapshot_id):
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance"})
    first, second = (submit(api, snapshot_id, "box")[1] for _ in range(2))
    # A run moved out of Queued without its report touching the queue (as before leases existed)
    services.ctx.table.update(Update(table_keys.run(first["id"]), set={"status": "Failed"}))
    assert [i["sk"] for i in services.ctx.table.query_all(_query("QUEUE#team#box"))] == [first["id"], second["id"]]
    assert api.ok("POST", f"{COMPUTES}/box/claim")["run"]["id"] == second["id"]
    assert [i["sk"] for i in services.ctx.table.query_all(_query("QUEUE#team#box"))] == [second["id"]]


def test_each_queued_run_is_claimed_by_exactly_one_of_many_agents(api, snapshot_id):
    # Given three queued runs and ten agents claiming at once
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance", "settings": {"max_concurrent_runs": 3}})
    queued = sorted(submit(api, snapshot_id, "box")[1]["id"] for _ in range(3))
    claims, lock = [], threading.Lock()

    def agent(_: int) -> None:
        status, body = api.call("POST", f"{COMPUTES}/box/claim")
        assert status in (200, 204), body
        if status == 200:
            with lock:
                claims.append(body["run"]["id"])

    # When they race, then each run went to exactly one agent
    assert all_at_once(agent, 10) == []
    assert sorted(claims) == queued
    assert api.call("POST", f"{COMPUTES}/box/claim")[0] == 204


def test_a_workspace_with_a_target_is_not_deleted_without_force(api, snapshot_id):
    api.ok("POST", COMPUTES, {"name": "box", "type": "instance"})
    assert api.call("DELETE", WS)[0] == 409


def _query(pk: str):
    from chalicelib.store.table import Query

    return Query(pk)
