"""Compute target settings, checked and completed without any I/O."""
from __future__ import annotations

import pytest

from chalicelib.errors import Invalid
from chalicelib.services.compute_settings import check_resources, check_settings

ARN = "arn:aws:batch:eu-west-1:123456789012:job-queue/shared-gpu"
NETWORK = {"subnets": ["subnet-0123456789abcdef0"], "security_group_ids": ["sg-0123456789abcdef0"]}


def test_instance_defaults():
    assert check_settings("instance", {}) == {"max_concurrent_runs": 1}


def test_a_provisioned_cluster_gets_its_defaults_and_its_max_as_the_job_limit():
    assert check_settings("batch", {"provisioning": "FARGATE", "max_vcpus": 4, **NETWORK}) == {
        "provisioning": "FARGATE", "min_vcpus": 0, "max_vcpus": 4, **NETWORK, "max_job_vcpus": 4, "vcpus": 1,
        "memory_mb": 2048, "gpus": 0}


def test_an_attached_queue_has_no_job_limit_unless_given():
    settings = check_settings("batch", {"job_queue_arn": ARN, "max_job_gpus": 1, "gpus": 1})
    assert settings == {"job_queue_arn": ARN, "max_job_gpus": 1, "vcpus": 1, "memory_mb": 2048, "gpus": 1}


@pytest.mark.parametrize("settings, field", [
    ({"job_queue_arn": ARN, "memory_mb": 4096, "max_job_memory_mb": 1024}, "settings.memory_mb"),
    ({"job_queue_arn": ARN, "vcpus": True}, "settings.vcpus"),
    ({"provisioning": "EC2", **NETWORK, "instance_types": []}, "settings.instance_types"),
    ({"provisioning": "EC2", "subnets": ["subnet-0123456789abcdef0"]}, "settings.security_group_ids"),
    ({"provisioning": "EC2", **NETWORK, "job_queue_arn": ARN}, "settings.provisioning"),
])
def test_the_field_at_fault_is_named(settings, field):
    with pytest.raises(Invalid) as caught:
        check_settings("batch", settings)
    assert caught.value.field == field


def test_resources_are_checked_against_the_job_limits():
    limits = {"max_job_vcpus": 2, "max_job_memory_mb": 4096}
    assert check_resources("c", limits, {"vcpus": 2, "memory_mb": 4096, "gpus": 3}) == {
        "vcpus": 2, "memory_mb": 4096, "gpus": 3}
    with pytest.raises(Invalid) as caught:
        check_resources("c", limits, {"memory_mb": 8192})
    assert caught.value.field == "run_config.resources.memory_mb"
