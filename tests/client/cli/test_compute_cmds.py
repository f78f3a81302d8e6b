"""`nimbus compute ...` and `nimbus agent` against the live in-process platform."""
from __future__ import annotations

import json


def test_create_list_show_and_delete_an_instance_target(nimbus, tmp_path):
    settings = tmp_path / "box.yaml"
    settings.write_text("max_concurrent_runs: 3\n")
    created = nimbus("compute", "create", "box", "--type", "instance", "--settings-file", str(settings),
                     "-o", "json", json_output=True)
    assert created["state"] == "Succeeded" and created["settings"] == {"max_concurrent_runs": 3}

    listed = nimbus("compute", "list")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "STATE", "SETTINGS"]
    assert lines[1].split()[:3] == ["local", "local", "Succeeded"]
    assert lines[2].split() == ["box", "instance", "Succeeded", "max_concurrent_runs=3"]

    shown = nimbus("compute", "show", "box")
    assert "active_runs: 0" in shown.stdout.splitlines()
    assert nimbus("compute", "delete", "box", "-o", "json", json_output=True) == {"name": "box", "deleted": True}
    assert [t["name"] for t in nimbus("compute", "list", "-o", "json", json_output=True)] == ["local"]


def test_settings_from_the_command_line_win_over_the_file(nimbus, tmp_path):
    settings = tmp_path / "box.json"
    settings.write_text(json.dumps({"max_concurrent_runs": 3}))
    created = nimbus("compute", "create", "box", "--type", "instance", "--settings-file", str(settings),
                     "--setting", "max_concurrent_runs=5", "-o", "json", json_output=True)
    assert created["settings"] == {"max_concurrent_runs": 5}


def test_errors_name_the_setting_at_fault_in_one_line(nimbus, tmp_path):
    result = nimbus("compute", "create", "box", "--type", "instance", "--setting", "max_concurrent_runs=lots")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: settings.max_concurrent_runs must be a whole number")
    result = nimbus("compute", "create", "box", "--type", "instance", "--setting", "oops")
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr
    result = nimbus("compute", "create", "cluster", "--type", "batch", "--setting", "job_queue_arn="
                    "arn:aws:batch:us-east-1:123456789012:job-queue/q")
    assert result.exit_code == 1 and "AWS Batch is not configured" in result.stderr
    bad_file = tmp_path / "list.yaml"
    bad_file.write_text("- 1\n")
    result = nimbus("compute", "create", "box", "--type", "instance", "--settings-file", str(bad_file))
    assert result.exit_code == 1 and "must hold an object" in result.stderr
    result = nimbus("compute", "delete", "local")
    assert result.exit_code == 1 and "built in" in result.stderr


def test_the_agent_serves_instance_targets_only_and_stops_when_once_finds_nothing(nimbus, tmp_path):
    result = nimbus("agent", "--compute", "local", "--once")
    assert result.exit_code == 1 and "instance targets only" in result.stderr
    result = nimbus("agent", "--compute", "nowhere", "--once")
    assert result.exit_code == 1 and "nimbus compute create" in result.stderr

    nimbus("compute", "create", "box", "--type", "instance")
    result = nimbus("agent", "--compute", "box", "--once", "--jobs-dir", str(tmp_path / "jobs"))
    assert result.exit_code == 0, result.stderr
    assert "agent stopped after 0 run(s)" in result.stderr


def test_create_waits_for_a_cluster_and_reports_its_failure(nimbus, platform):
    from tests.server.unit.fake_provisioner import StagedProvisioner

    platform.services.provisioner = provisioner = StagedProvisioner(waits=1)
    try:
        network = ["--setting", "provisioning=FARGATE", "--setting", 'subnets=["subnet-0123456789abcdef0"]',
                   "--setting", 'security_group_ids=["sg-0123456789abcdef0"]']
        made = nimbus("compute", "create", "cluster", "--type", "batch", *network, "--poll-seconds", "0.05",
                      "-o", "json", json_output=True)
        assert made["state"] == "Succeeded" and made["resources"]["job_queue_arn"] == "arn:jq/cluster"

        started = nimbus("compute", "create", "later", "--type", "batch", *network, "--no-wait", "-o", "json",
                         json_output=True)
        assert started["state"] == "Creating"

        provisioner.fail_with = "subnet-0123456789abcdef0 is not in a VPC"
        result = nimbus("compute", "create", "broken", "--type", "batch", *network, "--poll-seconds", "0.05")
        assert result.exit_code == 1
        assert "being created; waiting" in result.stderr
        assert "could not be created: the compute environment is INVALID: subnet-0123456789abcdef0 is not in a VPC" \
            in result.stderr
    finally:
        platform.services.provisioner = None
