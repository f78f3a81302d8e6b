"""The Batch plan as pure data: names, job definitions, submit requests, clusters (no AWS)."""
from __future__ import annotations

import pytest

from chalicelib.compute.batch import spec as bs
from chalicelib.errors import Invalid
from nimbus.runtime.job_spec import JobSpec

RUN = "0190a1b2c3d4e5f6a7b8c9"
QUEUE = "arn:aws:batch:us-east-1:123456789012:job-queue/nimbus-team-gpu"
ROLES = bs.BatchRoles(job_role_arn="arn:aws:iam::123456789012:role/job",
                      execution_role_arn="arn:aws:iam::123456789012:role/exec",
                      instance_role_arn="arn:aws:iam::123456789012:instance-profile/inst")


def target(provisioning="EC2", **settings) -> dict:
    return {"name": "gpu", "type": "batch", "settings": {"provisioning": provisioning, **settings},
            "resources": {"job_queue_arn": QUEUE, "created": True}}


def spec(**overrides) -> JobSpec:
    values = dict(run_id=RUN, workspace="team", max_duration_s=3600, compute="gpu", target=target())
    values.update(overrides)
    return JobSpec(**values)


def definition(s: JobSpec, image="registry/runner:1") -> dict:
    return bs.register_job_definition(s, table="nimbus-dev", default_image=image, roles=ROLES)


def test_job_names_are_deterministic_valid_and_lead_back_to_the_run():
    name = bs.job_name("team", RUN)
    assert name == f"nimbus-team-{RUN}"
    assert bs.run_of_job_name(name) == ("team", RUN)
    assert bs.run_of_job_name("someone-elses-job") is None
    long = bs.job_name("w" * 200 + ".x", RUN)
    assert len(long) == 128 and long.endswith("-" + RUN) and "." not in long


def test_resource_names_carry_the_table_and_stay_within_limits():
    assert bs.resource_name("nimbus-dev", "team", "gpu") == "nimbus-dev-team-gpu"
    cut = bs.resource_name("nimbus-dev", "a" * 80, "b" * 80)
    assert len(cut) == 128 and cut.startswith("nimbus-dev-")
    assert cut != bs.resource_name("nimbus-dev", "a" * 80, "b" * 79 + "c")
    assert bs.job_definition_name("nimbus-dev", None) == "nimbus-dev-runner"
    assert bs.job_definition_name("nimbus-dev", {"hash": "ab" * 32, "image_uri": "x"}) == "nimbus-dev-env-" + "ab" * 8


def test_a_single_node_definition_runs_the_runner_with_the_run_resources():
    request = definition(spec(resources={"vcpus": 4, "memory_mb": 8192, "gpus": 1}))
    assert request["type"] == "container" and request["platformCapabilities"] == ["EC2"]
    container = request["containerProperties"]
    assert container["image"] == "registry/runner:1"
    assert container["command"] == ["python", "-m", "nimbus.runtime.runner"]
    assert container["jobRoleArn"] == ROLES.job_role_arn
    assert container["resourceRequirements"] == [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "8192"},
                                                 {"type": "GPU", "value": "1"}]
    assert request["retryStrategy"]["attempts"] == 2
    assert request["retryStrategy"]["evaluateOnExit"] == [{"onStatusReason": "Host EC2*", "action": "RETRY"},
                                                          {"onReason": "*", "action": "EXIT"}]


def test_defaults_come_from_the_target_then_the_platform():
    request = definition(spec(target=target(vcpus=2, memory_mb=4096)))
    assert request["containerProperties"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}]
    plain = definition(spec(target=target()))
    assert plain["containerProperties"]["resourceRequirements"][1] == {"type": "MEMORY", "value": "2048"}


def test_the_environment_image_wins_and_no_image_at_all_is_refused():
    env = {"hash": "cd" * 32, "image_uri": "123.dkr.ecr/ws:env"}
    request = definition(spec(environment=env))
    assert request["containerProperties"]["image"] == "123.dkr.ecr/ws:env"
    assert request["jobDefinitionName"] == "nimbus-dev-env-" + "cd" * 8
    with pytest.raises(Invalid, match="NIMBUS_RUNNER_IMAGE"):
        definition(spec(), image="")


def test_several_nodes_make_a_multinode_job_with_main_node_zero():
    s = spec(node_count=3, process_count_per_node=2)
    request = definition(s)
    assert request["type"] == "multinode" and "containerProperties" not in request
    nodes = request["nodeProperties"]
    assert nodes["numNodes"] == 3 and nodes["mainNode"] == 0
    (node_range,) = nodes["nodeRangeProperties"]
    assert node_range["targetNodes"] == "0:" and node_range["container"]["command"][-1] == "nimbus.runtime.runner"
    submit = bs.submit_job(s, job_queue=QUEUE, job_definition="def:1", api_url="https://api", run_token="t",
                           experiment="e")
    assert "containerOverrides" not in submit
    overrides = submit["nodeOverrides"]
    assert overrides["numNodes"] == 3
    env = {e["name"]: e["value"] for e in overrides["nodePropertyOverrides"][0]["containerOverrides"]["environment"]}
    assert env["NIMBUS_NODE_COUNT"] == "3" and env["NIMBUS_PROCESSES_PER_NODE"] == "2"


def test_fargate_definitions_use_the_execution_role_and_valid_sizes_only():
    s = spec(target=target("FARGATE"), resources={"vcpus": 0.5, "memory_mb": 2048, "gpus": 0})
    request = definition(s)
    assert request["platformCapabilities"] == ["FARGATE"]
    container = request["containerProperties"]
    assert container["executionRoleArn"] == ROLES.execution_role_arn
    assert container["networkConfiguration"] == {"assignPublicIp": "ENABLED"}
    assert container["resourceRequirements"][0] == {"type": "VCPU", "value": "0.5"}
    with pytest.raises(Invalid) as memory:
        definition(spec(target=target("FARGATE"), resources={"vcpus": 1, "memory_mb": 1000, "gpus": 0}))
    assert memory.value.field == "run_config.resources.memory_mb"
    with pytest.raises(Invalid) as gpus:
        definition(spec(target=target("FARGATE"), resources={"vcpus": 1, "memory_mb": 2048, "gpus": 1}))
    assert gpus.value.field == "run_config.resources.gpus"
    with pytest.raises(Invalid) as nodes:
        definition(spec(target=target("FARGATE"), node_count=2))
    assert nodes.value.field == "run_config.node_count"
    with pytest.raises(Invalid, match="positive"):
        definition(spec(resources={"vcpus": 0, "memory_mb": 2048, "gpus": 0}))


def test_an_attached_queue_platform_comes_from_its_recorded_resources():
    attached = {"settings": {"job_queue_arn": QUEUE}, "resources": {"job_queue_arn": QUEUE, "platform": "FARGATE"}}
    assert bs.platform_of(attached) == "FARGATE"
    assert bs.platform_of({"settings": {"job_queue_arn": QUEUE}, "resources": {}}) == "EC2"


def test_submit_names_tags_and_environment_of_the_run():
    request = bs.submit_job(spec(), job_queue=QUEUE, job_definition="arn:def:3", api_url="https://api.example/api",
                            run_token="nrt_secret", experiment="mnist")
    assert request["jobName"] == f"nimbus-team-{RUN}"
    assert request["jobQueue"] == QUEUE and request["jobDefinition"] == "arn:def:3"
    assert request["tags"] == {"nimbus:workspace": "team", "nimbus:run": RUN, "nimbus:experiment": "mnist"}
    assert request["propagateTags"] is True
    env = {e["name"]: e["value"] for e in request["containerOverrides"]["environment"]}
    assert env == {"NIMBUS_URL": "https://api.example/api", "NIMBUS_RUN_TOKEN": "nrt_secret",
                   "NIMBUS_WORKSPACE": "team", "NIMBUS_RUN_ID": RUN, "NIMBUS_NODE_COUNT": "1",
                   "NIMBUS_PROCESSES_PER_NODE": "1"}
    argv, same_env = bs.container_command_env(spec(), "https://api.example/api", "nrt_secret")
    assert argv == definition(spec())["containerProperties"]["command"] and same_env == env


def test_a_sealed_token_replaces_the_clear_one_in_single_and_multinode_jobs():
    for s, where in ((spec(), lambda r: r["containerOverrides"]),
                     (spec(node_count=2), lambda r: r["nodeOverrides"]["nodePropertyOverrides"][0]["containerOverrides"])):
        request = bs.submit_job(s, job_queue=QUEUE, job_definition="arn:def:3", api_url="https://api.example/api",
                                sealed_run_token="c2VhbGVk", experiment="mnist")
        env = {e["name"]: e["value"] for e in where(request)["environment"]}
        assert env["NIMBUS_RUN_TOKEN_SEALED"] == "c2VhbGVk" and "NIMBUS_RUN_TOKEN" not in env
        assert env["NIMBUS_RUN_ID"] == RUN
    with pytest.raises(ValueError, match="not both"):
        bs.container_command_env(spec(), "https://api.example/api", "nrt_secret", sealed_run_token="c2VhbGVk")


def test_timeouts_cover_the_run_limit_plus_a_margin_and_respect_batch_minimum():
    assert bs.submit_job(spec(max_duration_s=3600), job_queue=QUEUE, job_definition="d", api_url="u", run_token="t",
                         experiment="e")["timeout"] == {"attemptDurationSeconds": 3600 + bs.TIMEOUT_MARGIN_S}
    assert bs.attempt_timeout(spec(max_duration_s=1))["attemptDurationSeconds"] >= bs.MIN_TIMEOUT_S
    assert "timeout" not in bs.submit_job(spec(max_duration_s=None), job_queue=QUEUE, job_definition="d",
                                          api_url="u", run_token="t", experiment="e")


def test_same_definition_ignores_what_batch_adds_when_describing():
    request = definition(spec())
    described = {**request, "jobDefinitionArn": "arn:…:1", "revision": 1, "status": "ACTIVE",
                 "containerProperties": {**request["containerProperties"], "volumes": [], "environment": [],
                                         "mountPoints": []}}
    assert bs.same_definition(described, request)
    other = definition(spec(resources={"vcpus": 2, "memory_mb": 2048, "gpus": 0}))
    assert not bs.same_definition(described, other)


def test_cluster_requests_for_ec2_and_fargate():
    ec2 = bs.create_compute_environment("nimbus-dev", "team", "gpu", {
        "provisioning": "EC2", "instance_types": ["g5.xlarge"], "min_vcpus": 0, "max_vcpus": 32,
        "subnets": ["subnet-1"], "security_group_ids": ["sg-1"]}, ROLES)
    assert ec2["computeEnvironmentName"] == "nimbus-dev-team-gpu" and ec2["type"] == "MANAGED"
    resources = ec2["computeResources"]
    assert resources["type"] == "EC2" and resources["instanceTypes"] == ["g5.xlarge"]
    assert resources["minvCpus"] == 0 and resources["maxvCpus"] == 32
    assert resources["instanceRole"] == ROLES.instance_role_arn and "serviceRole" not in ec2
    fargate = bs.create_compute_environment("nimbus-dev", "team", "cpu", {
        "provisioning": "FARGATE", "subnets": ["subnet-1"], "security_group_ids": ["sg-1"]},
        bs.BatchRoles(service_role_arn="arn:aws:iam::1:role/svc"))
    assert fargate["computeResources"]["type"] == "FARGATE" and "instanceRole" not in fargate["computeResources"]
    assert fargate["serviceRole"] == "arn:aws:iam::1:role/svc"
    with pytest.raises(Invalid) as missing:
        bs.create_compute_environment("nimbus-dev", "team", "gpu", {"provisioning": "EC2", "subnets": []}, ROLES)
    assert missing.value.field == "settings.subnets"
    queue = bs.create_job_queue("nimbus-dev", "team", "gpu", "arn:ce")
    assert queue["jobQueueName"] == "nimbus-dev-team-gpu"
    assert queue["computeEnvironmentOrder"] == [{"order": 1, "computeEnvironment": "arn:ce"}]
