"""A compute target's settings: checked field by field (`settings.max_vcpus` …) and completed with defaults.

Pure: no I/O. docs/compute.md lists the settings of each type.
"""
from __future__ import annotations

import re
from typing import Any

from chalicelib.errors import Invalid

TYPES = ("batch", "instance")
RESOURCES = ("vcpus", "memory_mb", "gpus")  # what one run asks for; `max_job_<name>` bounds it
DEFAULT_REQUEST = {"vcpus": 1, "memory_mb": 2048, "gpus": 0}
_MAX_VCPUS = 10_000
_MAX_MEMORY_MB = 2_000_000
_MAX_GPUS = 16
_JOB_QUEUE_ARN = re.compile(r"arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}:job-queue/[A-Za-z0-9_-]{1,128}")
_SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}")
_SECURITY_GROUP = re.compile(r"sg-[0-9a-f]{8,17}")
_INSTANCE_TYPE = re.compile(r"[a-z0-9-]{1,32}(\.[a-z0-9]{1,32})?")  # "optimal", a family ("c5") or a size
_PROVISIONED = ("provisioning", "instance_types", "min_vcpus", "max_vcpus", "subnets", "security_group_ids")
_LIMITS = ("max_job_vcpus", "max_job_memory_mb", "max_job_gpus", *RESOURCES)


def check_settings(kind: str, settings: Any) -> dict:
    """The settings to store, defaults filled in; Invalid naming the first field at fault."""
    if not isinstance(settings, dict):
        raise Invalid("settings must be an object", field="settings")
    if kind == "instance":
        _only(settings, ("max_concurrent_runs",))
        return {"max_concurrent_runs": _whole(settings, "max_concurrent_runs", 1, 1, 1024)}
    if kind == "batch":
        return _batch(settings)
    raise Invalid(f"type must be one of {', '.join(TYPES)}, not {kind!r}", field="type")


def _batch(settings: dict) -> dict:
    if "job_queue_arn" in settings:  # attach an existing queue: Nimbus creates nothing
        _only(settings, ("job_queue_arn", *_LIMITS))
        arn = settings["job_queue_arn"]
        if not isinstance(arn, str) or not _JOB_QUEUE_ARN.fullmatch(arn):
            raise _bad("job_queue_arn", "must be a Batch job queue ARN "
                                        "(arn:aws:batch:<region>:<account>:job-queue/<name>)")
        checked: dict = {"job_queue_arn": arn}
        cluster_vcpus = None  # unknown here: the queue's compute environments decide
    else:
        _only(settings, (*_PROVISIONED, *_LIMITS))
        checked = _provisioned(settings)
        cluster_vcpus = checked["max_vcpus"]
    limits = {
        "max_job_vcpus": _number(settings, "max_job_vcpus", cluster_vcpus, cluster_vcpus or _MAX_VCPUS),
        "max_job_memory_mb": _whole(settings, "max_job_memory_mb", None, 128, _MAX_MEMORY_MB),
        "max_job_gpus": _whole(settings, "max_job_gpus", None, 0, _MAX_GPUS),
    }
    request = {
        "vcpus": _number(settings, "vcpus", DEFAULT_REQUEST["vcpus"], _MAX_VCPUS),
        "memory_mb": _whole(settings, "memory_mb", DEFAULT_REQUEST["memory_mb"], 128, _MAX_MEMORY_MB),
        "gpus": _whole(settings, "gpus", DEFAULT_REQUEST["gpus"], 0, _MAX_GPUS),
    }
    for name in RESOURCES:  # the per-run default must itself be allowed
        limit = limits[f"max_job_{name}"]
        if limit is not None and request[name] > limit:
            raise _bad(name, f"the default request {request[name]} exceeds max_job_{name} ({limit})")
    return {**checked, **{k: v for k, v in limits.items() if v is not None}, **request}


def _provisioned(settings: dict) -> dict:
    provisioning = settings.get("provisioning")
    if provisioning not in ("EC2", "FARGATE"):
        raise _bad("provisioning", "give job_queue_arn to attach a queue, or provisioning EC2 or FARGATE "
                                   "for Nimbus to create one")
    if provisioning == "FARGATE" and "instance_types" in settings:
        raise _bad("instance_types", "applies to EC2 provisioning only")
    checked = {"provisioning": provisioning}
    if provisioning == "EC2":
        checked["instance_types"] = _names(settings, "instance_types", _INSTANCE_TYPE, ["optimal"], 20)
    checked["min_vcpus"] = _whole(settings, "min_vcpus", 0, 0, _MAX_VCPUS)
    checked["max_vcpus"] = _whole(settings, "max_vcpus", 16, 1, _MAX_VCPUS)
    if checked["min_vcpus"] > checked["max_vcpus"]:
        raise _bad("min_vcpus", f"must not exceed max_vcpus ({checked['max_vcpus']})")
    checked["subnets"] = _names(settings, "subnets", _SUBNET, None, 16)
    checked["security_group_ids"] = _names(settings, "security_group_ids", _SECURITY_GROUP, None, 5)
    return checked


def _only(settings: dict, allowed: tuple[str, ...]) -> None:
    for key in settings:
        if key not in allowed:
            raise _bad(str(key), f"is not a setting here (known: {', '.join(allowed)})")


def _whole(settings: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = settings.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(name, f"must be a whole number from {low} to {high}, not {value!r}")
    return value


def _number(settings: dict, name: str, default: float | None, high: float) -> float | None:
    value = settings.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
        raise _bad(name, f"must be a number above 0 and at most {high}, not {value!r}")
    return value


def _names(settings: dict, name: str, pattern: re.Pattern, default: list | None, most: int) -> list[str]:
    value = settings.get(name, default)
    if value is None:
        raise _bad(name, "is required")
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise _bad(name, f"must be a list of 1 to {most} entries")
    for index, entry in enumerate(value):
        if not isinstance(entry, str) or not pattern.fullmatch(entry):
            raise Invalid(f"settings.{name}[{index}]: {entry!r} is not valid", field=f"settings.{name}[{index}]")
    return list(value)


def _bad(name: str, problem: str) -> Invalid:
    return Invalid(f"settings.{name} {problem}", field=f"settings.{name}")


def check_resources(target_name: str, settings: dict, resources: dict | None) -> dict | None:
    """A run's request for one node against the target's `max_job_*`; Invalid names `run_config.resources.<x>`."""
    if not resources:
        return resources
    for name in RESOURCES:
        asked, limit = resources.get(name), settings.get(f"max_job_{name}")
        if asked is not None and limit is not None and asked > limit:
            raise Invalid(f"run_config.resources.{name} {asked} exceeds compute target {target_name!r}'s "
                          f"max_job_{name} ({limit})", field=f"run_config.resources.{name}")
    return resources
