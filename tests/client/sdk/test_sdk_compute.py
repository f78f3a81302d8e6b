"""ComputeTarget in the SDK, against the live in-process platform."""
from __future__ import annotations

import pytest

from nimbus import ComputeTarget, ConflictError, Experiment, InvalidError, ScriptRunConfig


def test_create_read_list_and_delete(workspace):
    box = ComputeTarget.create(workspace, "box", "instance", {"max_concurrent_runs": 2})
    assert (box.type, box.settings, box.state, box.active_runs) == ("instance", {"max_concurrent_runs": 2},
                                                                    "Succeeded", 0)
    assert [(t.name, t.type) for t in ComputeTarget.list(workspace)] == [("local", "local"), ("box", "instance")]
    assert ComputeTarget(workspace, "box").settings == {"max_concurrent_runs": 2}
    with pytest.raises(ConflictError):
        ComputeTarget.create(workspace, "box", "instance")
    box.delete()
    assert [t.name for t in ComputeTarget.list(workspace)] == ["local"]


def test_bad_settings_name_the_field(workspace):
    with pytest.raises(InvalidError) as caught:
        ComputeTarget.create(workspace, "box", "instance", {"max_concurrent_runs": -1})
    assert caught.value.field == "settings.max_concurrent_runs"


def test_a_target_with_a_queued_run_is_kept_until_the_run_ends(workspace, tmp_path):
    box = ComputeTarget.create(workspace, "box", "instance")
    (tmp_path / "train.py").write_text("print('hi')\n")
    run = Experiment(workspace, "sdk").submit(ScriptRunConfig(source_directory=tmp_path, script="train.py",
                                                              compute_target="box"))
    assert run.get_details()["compute_target"] == "box" and box.active_runs == 1
    with pytest.raises(ConflictError) as caught:
        box.delete()
    assert run.id in str(caught.value)
    run.cancel()
    box.delete()


CLUSTER = {"provisioning": "FARGATE", "max_vcpus": 8, "subnets": ["subnet-0123456789abcdef0"],
           "security_group_ids": ["sg-0123456789abcdef0"]}


@pytest.fixture
def provisioner(platform):
    from tests.server.unit.fake_provisioner import StagedProvisioner

    platform.services.provisioner = StagedProvisioner(waits=2)
    yield platform.services.provisioner
    platform.services.provisioner = None


def test_create_waits_until_the_cluster_is_ready(workspace, provisioner):
    cluster = ComputeTarget.create(workspace, "cluster", "batch", CLUSTER, poll_seconds=0.01)
    assert cluster.details["state"] == "Succeeded" and cluster.details["resources"]["job_queue_arn"]
    assert provisioner.queues == ["cluster"]


def test_delete_waits_until_batch_has_taken_the_cluster_down(workspace, provisioner):
    from nimbus.compute_target import ComputeTargetTimeout
    from nimbus.exceptions import NotFoundError

    cluster = ComputeTarget.create(workspace, "cluster", "batch", CLUSTER, poll_seconds=0.01)
    provisioner.dismantle_rounds = 3
    assert cluster.delete(wait=False) is False and cluster.state == "Deleting"  # rounds 1 and 2
    other = ComputeTarget.create(workspace, "other", "batch", CLUSTER, poll_seconds=0.01)
    provisioner.dismantle_rounds = 100
    with pytest.raises(ComputeTargetTimeout):
        other.delete(timeout_s=0, poll_seconds=0)
    provisioner.dismantle_rounds = 0
    assert other.delete(poll_seconds=0.01) is True  # already Deleting: the wait finishes it
    with pytest.raises(NotFoundError):
        other.refresh()
    with pytest.raises(NotFoundError):
        cluster.refresh()


def test_create_without_waiting_and_a_failure_with_its_reason(workspace, provisioner):
    from nimbus.compute_target import ComputeTargetFailed, ComputeTargetTimeout

    cluster = ComputeTarget.create(workspace, "cluster", "batch", CLUSTER, wait=False)
    assert cluster.details["state"] == "Creating"
    with pytest.raises(ComputeTargetTimeout):
        cluster.wait_for_completion(timeout_s=0, poll_seconds=0)
    provisioner.fail_with = "no capacity for these subnets"
    with pytest.raises(ComputeTargetFailed) as failed:
        cluster.wait_for_completion(poll_seconds=0.01)
    assert "no capacity for these subnets" in failed.value.message and failed.value.details["state"] == "Failed"
    with pytest.raises(ComputeTargetFailed):
        ComputeTarget.create(workspace, "other", "batch", CLUSTER, poll_seconds=0.01)
