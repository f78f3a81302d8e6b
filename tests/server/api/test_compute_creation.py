"""A batch cluster's creation as a state machine, on both backends: started by the request, advanced by
reads, submissions and the sweep, failed with Batch's reason and cleaned up, deleted while Creating."""
from __future__ import annotations

import pytest

from chalicelib.errors import Invalid
from chalicelib.domain import table_keys
from chalicelib.services.cluster_lifecycle import CREATE_TIMEOUT_S, PENDING_PK, START_GRACE_S
from chalicelib.services.compute_targets import ComputeTargets
from chalicelib.store.table import Query, Update
from tests.server.api.helpers import all_at_once
from tests.server.unit.fake_provisioner import StagedProvisioner

WS = "/v1/workspaces/team"
COMPUTES = f"{WS}/computes"
CLUSTER = {"provisioning": "FARGATE", "max_vcpus": 8, "subnets": ["subnet-0123456789abcdef0"],
           "security_group_ids": ["sg-0123456789abcdef0"]}


@pytest.fixture
def provisioner(api, services):
    api.ok("POST", "/v1/workspaces", {"name": "team"})
    services.provisioner = StagedProvisioner(waits=1)
    return services.provisioner


@pytest.fixture
def clock(services) -> list[float]:
    now = [services.ctx.clock()]
    services.ctx.clock = lambda: now[0]
    return now


def create(api, name="cluster", settings=CLUSTER):
    status, body = api.call("POST", COMPUTES, {"name": name, "type": "batch", "settings": settings})
    assert status == 202, body
    return body


def pending(services) -> list[str]:
    return [i["sk"] for i in services.ctx.table.query_all(Query(PENDING_PK))]


def test_each_read_takes_the_creation_one_step_further(api, services, provisioner):
    # Given a cluster whose compute environment and queue each take one look before they are VALID
    assert create(api)["state"] == "Creating"
    assert pending(services) == ["team#cluster"]

    # When it is read, then each read moves it as far as Batch lets it, and no further
    first = api.ok("GET", f"{COMPUTES}/cluster")
    assert (first["state"], first["step"], provisioner.queues) == ("Creating", "compute_environment", [])
    second = api.ok("GET", f"{COMPUTES}/cluster")
    assert (second["state"], second["step"], provisioner.queues) == ("Creating", "job_queue", ["cluster"])
    done = api.ok("GET", f"{COMPUTES}/cluster")
    assert done["state"] == "Succeeded" and done["resources"]["job_queue_arn"] == "arn:jq/cluster"
    assert api.ok("GET", f"{COMPUTES}/cluster")["state"] == "Succeeded" and provisioner.queues == ["cluster"]
    assert pending(services) == []


def test_a_submission_naming_it_and_the_sweep_advance_it_too(api, services, provisioner):
    create(api, "one")
    create(api, "two")
    targets = services.compute_targets
    for step in ("compute_environment", "job_queue"):  # not ready at these looks: refused, one step on
        with pytest.raises(Invalid) as refused:
            targets.usable("team", "one")
        assert refused.value.field == "run_config.compute" and "Creating" in refused.value.message
        assert targets.find("team", "one")["step"] == step
    assert targets.usable("team", "one")["state"] == "Succeeded"

    assert targets.sweep() == {"checked": 1, "settled": 0}  # `one` left the list when it was done
    assert targets.sweep() == {"checked": 1, "settled": 0}
    assert targets.sweep() == {"checked": 1, "settled": 1}
    assert api.ok("GET", f"{COMPUTES}/two")["state"] == "Succeeded" and pending(services) == []
    assert sorted(provisioner.queues) == ["one", "two"]


def test_concurrent_readers_make_one_queue(api, services, provisioner):
    # Given a compute environment that is VALID, and a queue that takes a while to make
    provisioner.waits, provisioner.queue_seconds = 0, 0.2
    create(api)

    # When ten readers look at once
    answers = []
    assert all_at_once(lambda _: answers.append(api.ok("GET", f"{COMPUTES}/cluster")["state"]), 10) == []

    # Then one of them made the queue, and the target ends Succeeded
    assert provisioner.queues == ["cluster"]
    assert api.ok("GET", f"{COMPUTES}/cluster")["state"] == "Succeeded"


def test_an_invalid_compute_environment_fails_the_target_and_is_taken_down(api, services, provisioner):
    provisioner.fail_with = "subnet not in this VPC"
    provisioner.dismantle_rounds = 2
    made = create(api)

    # The read that finds it INVALID fails the target with Batch's reason; the teardown has begun
    failed = api.ok("GET", f"{COMPUTES}/cluster")
    assert failed["state"] == "Failed" and "subnet not in this VPC" in failed["error"]["message"]
    assert failed["cleanup"] is True and provisioner.queues == []
    status, body = api.call("POST", COMPUTES, {"name": "cluster", "type": "batch", "settings": CLUSTER})
    assert status == 409 and body["field"] == "name" and "still being deleted" in body["message"]

    # The sweep finishes it: nothing is left, and the name may be used again
    assert services.compute_targets.sweep() == {"checked": 1, "settled": 1}
    assert provisioner.dismantled == [made["resources"]] * 2
    shown = api.ok("GET", f"{COMPUTES}/cluster")
    assert shown["state"] == "Failed" and "cleanup" not in shown and "resources" not in shown
    provisioner.fail_with = None
    create(api)


def test_a_creation_that_takes_too_long_fails(api, services, provisioner, clock):
    provisioner.waits = 10**6
    create(api)
    clock[0] += CREATE_TIMEOUT_S + 1
    shown = api.ok("GET", f"{COMPUTES}/cluster")
    assert shown["state"] == "Failed" and "not ready after 30 minutes" in shown["error"]["message"]
    assert provisioner.dismantled and "cleanup" not in shown


def test_an_interrupted_start_is_adopted_or_failed(api, services, provisioner, clock):
    # Given two creates whose requests died before recording their compute environment
    for name in ("found", "lost"):
        create(api, name)
        services.ctx.table.update(Update(table_keys.compute_target("team", name), set={"resources": {}},
                                         remove=["step"]))
    assert api.ok("GET", f"{COMPUTES}/found")["state"] == "Creating"  # its request may still be at it
    clock[0] += START_GRACE_S + 1

    provisioner.orphan = {"compute_environment_arn": "arn:ce/found", "name": "found", "created": True}
    provisioner.waits = 0
    assert api.ok("GET", f"{COMPUTES}/found")["state"] == "Succeeded"
    provisioner.orphan = None
    lost = api.ok("GET", f"{COMPUTES}/lost")
    assert lost["state"] == "Failed" and "interrupted" in lost["error"]["message"]


def test_a_target_being_created_can_be_deleted(api, services, provisioner, clock):
    made = create(api)
    api.ok("DELETE", f"{COMPUTES}/cluster")
    assert provisioner.dismantled == [made["resources"]]
    assert api.call("GET", f"{COMPUTES}/cluster")[0] == 404 and pending(services) == []

    # One whose start is not recorded yet waits for its request; later, what it made is found and deleted
    create(api)
    services.ctx.table.update(Update(table_keys.compute_target("team", "cluster"), set={"resources": {}}, remove=["step"]))
    status, body = api.call("DELETE", f"{COMPUTES}/cluster")
    assert status == 409 and "being started" in body["message"]
    clock[0] += START_GRACE_S + 1
    provisioner.orphan = {"compute_environment_arn": "arn:ce/cluster", "name": "cluster", "created": True}
    api.ok("DELETE", f"{COMPUTES}/cluster")
    assert provisioner.dismantled[-1] == provisioner.orphan


def test_without_a_provisioner_reads_change_nothing(api, services, provisioner):
    create(api)
    services.provisioner = None
    assert api.ok("GET", f"{COMPUTES}/cluster")["state"] == "Creating"
    assert ComputeTargets(services.ctx).sweep() == {"checked": 0, "settled": 0}


def test_a_cluster_batch_takes_a_while_to_take_down_is_deleted_by_later_looks(api, services, provisioner):
    # Given a made cluster whose teardown takes three rounds
    create(api)
    api.ok("GET", f"{COMPUTES}/cluster")
    api.ok("GET", f"{COMPUTES}/cluster")
    made = api.ok("GET", f"{COMPUTES}/cluster")
    assert made["state"] == "Succeeded"
    provisioner.dismantle_rounds = 3

    # When it is deleted, then the request answers at once: 202 while Batch takes it down
    status, body = api.call("DELETE", f"{COMPUTES}/cluster")
    assert (status, body) == (202, {"name": "cluster", "deleted": False, "state": "Deleting"})
    assert api.ok("GET", f"{COMPUTES}/cluster")["state"] == "Deleting"  # the second round
    status, body = api.call("POST", COMPUTES, {"name": "cluster", "type": "batch", "settings": CLUSTER})
    assert status == 409 and body["field"] == "name"
    # And the next look (a read or the sweep) that finds it gone removes the target
    assert ComputeTargets(services.ctx, provisioner).sweep() == {"checked": 1, "settled": 1}
    assert api.call("GET", f"{COMPUTES}/cluster")[0] == 404 and pending(services) == []
    assert provisioner.dismantled == [made["resources"]] * 3


def test_a_workspace_deleted_while_its_cluster_is_taken_down_leaves_the_sweep_to_finish(api, services, provisioner):
    create(api)
    for _ in range(3):
        made = api.ok("GET", f"{COMPUTES}/cluster")
    provisioner.dismantle_rounds = 2
    assert api.ok("DELETE", "/v1/workspaces/team?force=true")["compute_targets"] == 1
    assert api.call("GET", COMPUTES)[0] == 404 and pending(services) == ["team#cluster"]

    assert ComputeTargets(services.ctx, provisioner).sweep() == {"checked": 1, "settled": 1}
    assert pending(services) == [] and provisioner.dismantled == [made["resources"]] * 2
