"""What a run becomes on AWS Batch, computed as plain data (no AWS calls; batch.py sends it).

One job per run, named `nimbus-<workspace>-<run_id>` and tagged with its workspace, run and experiment,
so the job can be found from the run and the run from the job (the reconciler reads the tags of Batch's
"Job State Change" events). The container runs `python -m nimbus.runtime.runner`, which fetches the snapshot,
runs the script and reports everything through the API with the run's own token. Whoever may describe
the job reads its environment, so the token goes there sealed (NIMBUS_RUN_TOKEN_SEALED: batch.py encrypts
it with the stage's KMS key, the runner decrypts it) when the platform has a key, in clear otherwise.

Job definitions are shared: one name per image (`<table>-runner`, or `<table>-env-<hash>` for an
environment's image) and a new revision only when a property differs. Values that change from run to
run (the environment variables, the timeout) go with `submit_job`, so they never add revisions.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import Invalid
from nimbus.runtime.job_spec import JobSpec, runner_command
from nimbus.runtime.sealed_token import SEALED_ENV

JOB_NAME_MAX = 128  # Batch: letters, digits, '-' and '_', starting with a letter or digit
RESOURCE_NAME_MAX = 128  # compute environments, job queues, job definitions
MIN_TIMEOUT_S = 60  # Batch refuses a shorter attemptDurationSeconds
# Room for fetching the snapshot and uploading outputs around the script's own limit.
TIMEOUT_MARGIN_S = 300
DEFAULTS = {"vcpus": 1, "memory_mb": 2048, "gpus": 0}
EC2, FARGATE = "EC2", "FARGATE"
# A job whose host instance went away (Spot reclaim, scale-in) is retried once; any other failure is final.
RETRY_STRATEGY = {"attempts": 2, "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRY"},
                                                    {"onReason": "*", "action": "EXIT"}]}
# Fargate's valid (vCPU, memory MiB) combinations: memory from low to high in steps.
FARGATE_MEMORY = {0.25: (512, 2048, 512), 0.5: (1024, 4096, 1024), 1: (2048, 8192, 1024),
                  2: (4096, 16384, 1024), 4: (8192, 30720, 1024), 8: (16384, 61440, 4096),
                  16: (32768, 122880, 8192)}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class BatchRoles:
    """Resolved role ARNs (batch.py completes names from the settings with the account id)."""

    job_role_arn: str = ""
    execution_role_arn: str = ""  # Fargate only
    instance_role_arn: str = ""  # an instance profile, EC2 only
    service_role_arn: str = ""  # empty: Batch's service-linked role


# --- names ----------------------------------------------------------------------------------------


def _safe(text: str) -> str:
    return _UNSAFE.sub("-", text)


def job_name(workspace: str, run_id: str) -> str:
    """`nimbus-<workspace>-<run_id>`; the run id is kept whole when the name must be cut short."""
    tail = "-" + _safe(run_id)
    return (_safe(f"nimbus-{workspace}")[: JOB_NAME_MAX - len(tail)] + tail)[:JOB_NAME_MAX]


def run_of_job_name(name: str) -> tuple[str, str] | None:
    """(workspace, run_id) of a job named by job_name(); None for any other job."""
    match = re.fullmatch(r"nimbus-([a-z0-9][a-z0-9-]*)-([0-9a-f]{22})", name or "")
    return (match.group(1), match.group(2)) if match else None


def resource_name(table: str, workspace: str, target: str) -> str:
    """The compute environment and job queue of a target: `<table>-<workspace>-<target>` (the API's IAM
    policy grants `<table>-*` only). A digest keeps cut names apart."""
    full = _safe(f"{table}-{workspace}-{target}")
    if len(full) <= RESOURCE_NAME_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: RESOURCE_NAME_MAX - 9]}-{digest}"


def job_definition_name(table: str, environment: dict | None) -> str:
    if environment and environment.get("hash"):
        return f"{_safe(table)}-env-{environment['hash'][:16]}"
    return f"{_safe(table)}-runner"


# --- what one run needs ---------------------------------------------------------------------------


def platform_of(target: dict) -> str:
    """EC2 or FARGATE: what the target's queue runs (recorded in `resources.platform` when known)."""
    resources, settings = target.get("resources") or {}, target.get("settings") or {}
    platform = resources.get("platform") or settings.get("provisioning") or EC2
    return FARGATE if str(platform).upper().startswith(FARGATE) else EC2


def requested_resources(spec: JobSpec) -> dict:
    """The run's vCPUs, memory and GPUs per node: the run's request, else the target's defaults."""
    settings = (spec.target or {}).get("settings") or {}
    asked = spec.resources or {}
    chosen = {name: asked.get(name, settings.get(name, default)) for name, default in DEFAULTS.items()}
    for name, value in chosen.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or (
                name != "gpus" and value <= 0):
            raise Invalid(f"resources.{name} must be a positive number", field=f"run_config.resources.{name}")
    return chosen


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def resource_requirements(resources: dict, platform: str) -> list[dict]:
    vcpus, memory, gpus = resources["vcpus"], int(resources["memory_mb"]), int(resources["gpus"])
    if platform == FARGATE:
        if gpus:
            raise Invalid("Fargate runs no GPU jobs: use an EC2 compute target", field="run_config.resources.gpus")
        if vcpus not in FARGATE_MEMORY:
            raise Invalid(f"Fargate runs jobs of {', '.join(_number(v) for v in FARGATE_MEMORY)} vCPUs, not "
                          f"{_number(vcpus)}", field="run_config.resources.vcpus")
        low, high, step = FARGATE_MEMORY[vcpus]
        if not (low <= memory <= high and (memory - low) % step == 0):
            raise Invalid(f"Fargate gives {_number(vcpus)} vCPUs {low}-{high} MiB of memory in steps of {step}, "
                          f"not {memory}", field="run_config.resources.memory_mb")
    requirements = [{"type": "VCPU", "value": _number(vcpus)}, {"type": "MEMORY", "value": str(memory)}]
    if gpus:
        requirements.append({"type": "GPU", "value": str(gpus)})
    return requirements


def image_of(spec: JobSpec, default_image: str) -> str:
    image = (spec.environment or {}).get("image_uri") or default_image
    if not image:
        raise Invalid("no container image for this run: its environment has no built image and the platform "
                      "has no runner image (NIMBUS_RUNNER_IMAGE)", field="run_config.environment")
    return image


def container_command_env(spec: JobSpec, api_url: str, run_token: str = "", *,
                          sealed_run_token: str = "") -> tuple[list[str], dict[str, str]]:
    """The exact command and environment of the job's container (the e2e tests run the same locally).

    The run's token is either `run_token` (NIMBUS_RUN_TOKEN, in clear) or `sealed_run_token` (already
    encrypted for this run: NIMBUS_RUN_TOKEN_SEALED), never both."""
    if run_token and sealed_run_token:
        raise ValueError("a job carries its run token either sealed or in clear, not both")
    token = {SEALED_ENV: sealed_run_token} if sealed_run_token else {"NIMBUS_RUN_TOKEN": run_token}
    env = {"NIMBUS_URL": api_url, **token, "NIMBUS_WORKSPACE": spec.workspace,
           "NIMBUS_RUN_ID": spec.run_id, "NIMBUS_NODE_COUNT": str(spec.node_count),
           "NIMBUS_PROCESSES_PER_NODE": str(spec.process_count_per_node)}
    return runner_command("python"), env


def attempt_timeout(spec: JobSpec) -> dict | None:
    if spec.max_duration_s is None:
        return None
    return {"attemptDurationSeconds": max(MIN_TIMEOUT_S, int(spec.max_duration_s) + TIMEOUT_MARGIN_S)}


# --- requests -------------------------------------------------------------------------------------


def register_job_definition(spec: JobSpec, *, table: str, default_image: str, roles: BatchRoles) -> dict:
    """register_job_definition's arguments: image, command, resources, role, retry; multi-node when
    the run asks for more than one node."""
    target = spec.target or {}
    platform = platform_of(target)
    argv, _ = container_command_env(spec, "", "")
    container: dict[str, Any] = {
        "image": image_of(spec, default_image),
        "command": argv,
        "resourceRequirements": resource_requirements(requested_resources(spec), platform),
    }
    if roles.job_role_arn:
        container["jobRoleArn"] = roles.job_role_arn
    request: dict[str, Any] = {"jobDefinitionName": job_definition_name(table, spec.environment),
                               "retryStrategy": RETRY_STRATEGY, "propagateTags": True,
                               "tags": {"nimbus:table": table}}
    if platform == FARGATE:
        if spec.node_count > 1:
            raise Invalid("Fargate runs no multi-node jobs: use an EC2 compute target", field="run_config.node_count")
        if not roles.execution_role_arn:
            raise Invalid("a Fargate target needs the platform's execution role (NIMBUS_BATCH_EXECUTION_ROLE_ARN)",
                          field="compute")
        container["executionRoleArn"] = roles.execution_role_arn
        # Without a public IP a task in a public subnet cannot pull its image nor reach the API.
        public = (target.get("settings") or {}).get("assign_public_ip", True)
        container["networkConfiguration"] = {"assignPublicIp": "ENABLED" if public else "DISABLED"}
        request["platformCapabilities"] = [FARGATE]
    else:
        request["platformCapabilities"] = [EC2]
    if spec.node_count > 1:
        request["type"] = "multinode"
        request["nodeProperties"] = {"numNodes": spec.node_count, "mainNode": 0,
                                     "nodeRangeProperties": [{"targetNodes": "0:", "container": container}]}
    else:
        request["type"] = "container"
        request["containerProperties"] = container
    return request


def submit_job(spec: JobSpec, *, job_queue: str, job_definition: str, api_url: str, run_token: str = "",
               sealed_run_token: str = "", experiment: str) -> dict:
    """submit_job's arguments: the run's name, tags, environment (with the token in clear or sealed, as
    container_command_env) and timeout."""
    _, env = container_command_env(spec, api_url, run_token, sealed_run_token=sealed_run_token)
    overrides = {"environment": [{"name": k, "value": v} for k, v in env.items()]}
    request: dict[str, Any] = {
        "jobName": job_name(spec.workspace, spec.run_id),
        "jobQueue": job_queue,
        "jobDefinition": job_definition,
        "tags": {"nimbus:workspace": spec.workspace, "nimbus:run": spec.run_id, "nimbus:experiment": experiment},
        "propagateTags": True,
    }
    if spec.node_count > 1:  # multi-node jobs take their overrides per node range
        request["nodeOverrides"] = {"numNodes": spec.node_count, "nodePropertyOverrides": [
            {"targetNodes": "0:", "containerOverrides": overrides}]}
    else:
        request["containerOverrides"] = overrides
    timeout = attempt_timeout(spec)
    if timeout:
        request["timeout"] = timeout
    return request


def same_definition(existing: dict, request: dict) -> bool:
    """Whether an ACTIVE revision (describe_job_definitions) already has what `request` asks for."""
    def relevant(definition: dict) -> dict:
        kept = {k: definition.get(k) for k in ("type", "containerProperties", "nodeProperties", "retryStrategy",
                                                "propagateTags")}
        kept["platformCapabilities"] = sorted(definition.get("platformCapabilities") or [EC2])
        return _pruned(kept)

    return relevant(existing) == relevant(request)


def _pruned(value: Any) -> Any:
    """Drops empty values Batch adds when it describes a definition (`volumes: []`, `secrets: []` …), and
    what it may spell differently: retry actions' case, the order of resource requirements."""
    if isinstance(value, dict):
        pruned = {k: _pruned(v) for k, v in value.items()}
        if isinstance(pruned.get("action"), str):
            pruned["action"] = pruned["action"].upper()
        if isinstance(pruned.get("resourceRequirements"), list):
            pruned["resourceRequirements"] = sorted(pruned["resourceRequirements"], key=lambda r: str(r.get("type")))
        return {k: v for k, v in pruned.items() if v not in (None, [], {}, "")}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


# --- a target's own cluster -----------------------------------------------------------------------


def create_compute_environment(table: str, workspace: str, target: str, settings: dict, roles: BatchRoles) -> dict:
    """A managed compute environment that scales from min_vcpus (default 0) to max_vcpus."""
    platform = FARGATE if str(settings.get("provisioning", EC2)).upper() == FARGATE else EC2
    subnets, groups = settings.get("subnets") or [], settings.get("security_group_ids") or []
    if not subnets:
        raise Invalid("a Batch compute environment needs subnets", field="settings.subnets")
    if not groups:
        raise Invalid("a Batch compute environment needs security groups", field="settings.security_group_ids")
    resources: dict[str, Any] = {"type": platform, "maxvCpus": int(settings.get("max_vcpus", 16)),
                                 "subnets": list(subnets), "securityGroupIds": list(groups)}
    if platform == EC2:
        if not roles.instance_role_arn:
            raise Invalid("an EC2 compute environment needs the platform's instance profile "
                          "(NIMBUS_BATCH_INSTANCE_ROLE_ARN)", field="settings.provisioning")
        resources.update({"minvCpus": int(settings.get("min_vcpus", 0)),
                          "instanceTypes": list(settings.get("instance_types") or ["optimal"]),
                          "instanceRole": roles.instance_role_arn,
                          "allocationStrategy": "BEST_FIT_PROGRESSIVE"})
    name = resource_name(table, workspace, target)
    request = {"computeEnvironmentName": name, "type": "MANAGED", "state": "ENABLED", "computeResources": resources,
               "tags": {"nimbus:table": table, "nimbus:workspace": workspace, "nimbus:compute": target}}
    if roles.service_role_arn:
        request["serviceRole"] = roles.service_role_arn
    return request


def create_job_queue(table: str, workspace: str, target: str, compute_environment_arn: str) -> dict:
    return {"jobQueueName": resource_name(table, workspace, target), "state": "ENABLED", "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": compute_environment_arn}],
            "tags": {"nimbus:table": table, "nimbus:workspace": workspace, "nimbus:compute": target}}
