"""A batch target's AWS Batch cluster: a compute environment and job queue Nimbus makes (and deletes), or
an existing queue attached. Sends what batch_spec.py plans, through throttle-tolerant calls.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from chalicelib.compute.batch import spec as spec_module
from chalicelib.compute.batch.calls import Calls, RoleArns, lazy_client
from chalicelib.errors import Invalid, NimbusError, Unavailable
from chalicelib.settings import Settings

logger = logging.getLogger(__name__)

_BUSY = ("CREATING", "UPDATING", "DELETING")  # a compute environment or queue that takes no change now


class BatchProvisioner:
    """A batch target's cluster: created by Nimbus (and then deleted by it), or an existing queue attached.

    Creating one takes minutes, so it is done in steps that never wait (the service's state machine calls
    them: services/compute_targets.py): `start` asks for the compute environment, `status` tells whether
    the resource in progress is ready, `create_queue` makes the queue once the compute environment is
    VALID, and `dismantle` takes down a step of what was made. `create` and `delete` do the whole job and
    wait (bounded by `max_wait_seconds`) for scripts, tests and the target delete.
    """

    def __init__(self, settings: Settings, batch_client=None, *, sts_client=None, poll_seconds: float = 2.0,
                 max_wait_seconds: float = 300.0, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.call = Calls(lazy_client(settings, batch_client))
        self.roles = RoleArns(settings, sts_client)
        self.poll_seconds, self.max_wait_seconds, self._sleep = poll_seconds, max_wait_seconds, sleep

    # --- the steps ----------------------------------------------------------------------------------
    def start(self, workspace: str, name: str, settings: dict) -> dict:
        """An attached queue: validated, its resources complete (`created` False). Otherwise the compute
        environment is asked for and its resources returned without a queue (`created` True)."""
        if settings.get("job_queue_arn"):
            return self.attach(settings["job_queue_arn"])
        request = spec_module.create_compute_environment(self.settings.table_name, workspace, name, settings,
                                                         self.roles.roles())
        created = self.call("create_compute_environment", "creating the compute environment",
                            field="settings", **request)
        return {"compute_environment_arn": created["computeEnvironmentArn"], "name": request["computeEnvironmentName"],
                "created": True, "platform": request["computeResources"]["type"]}

    def find_started(self, workspace: str, name: str) -> dict | None:
        """The resources of a compute environment a `start` made but could not record (found by its
        name), or None when there is none."""
        resource = spec_module.resource_name(self.settings.table_name, workspace, name)
        environment = self._describe_ce(resource)
        if environment is None:
            return None
        platform = (environment.get("computeResources") or {}).get("type", spec_module.EC2)
        return {"compute_environment_arn": environment["computeEnvironmentArn"], "name": resource, "created": True,
                "platform": spec_module.FARGATE if platform.startswith("FARGATE") else spec_module.EC2}

    def status(self, resources: dict) -> tuple[str, str | None]:
        """Of the resource in progress (the queue once there is one, else the compute environment):
        ("waiting", None), ("ready", None) or ("failed", Batch's reason)."""
        if resources.get("job_queue_arn"):
            what, current = "job queue", self._describe_queue(resources["job_queue_arn"])
        else:
            what, current = "compute environment", self._describe_ce(resources["compute_environment_arn"])
        if current is None:
            return "failed", f"the {what} disappeared"
        status = current.get("status")
        if status in ("CREATING", "UPDATING"):
            return "waiting", None
        if status == "VALID":
            return "ready", None
        return "failed", f"the {what} is {status}: {current.get('statusReason') or 'no reason given'}"

    def create_queue(self, workspace: str, name: str, resources: dict) -> str:
        """The queue's ARN: made now, or found when an earlier call made it and its answer was lost."""
        request = spec_module.create_job_queue(self.settings.table_name, workspace, name,
                                               resources["compute_environment_arn"])
        existing = self._describe_queue(request["jobQueueName"])
        if existing is not None:
            return existing["jobQueueArn"]
        return self.call("create_job_queue", "creating the job queue", field="settings", **request)["jobQueueArn"]

    def dismantle(self, resources: dict) -> bool:
        """Takes down what Nimbus made, as far as it goes without waiting (disable, then delete, the queue,
        then the compute environment); True once nothing is left. Attached queues are left alone."""
        if not resources.get("created"):
            return True
        for _ in range(6):  # a step whose effect is immediate is followed by the next at once
            progress = self._dismantle_step(resources)
            if progress != "progress":
                return progress == "done"
        return False

    def _dismantle_step(self, resources: dict) -> str:
        queue_ref = resources.get("job_queue_arn") or resources.get("name")
        queue = self._describe_queue(queue_ref) if queue_ref else None
        if queue is not None:
            return self._take_down(queue, "job queue", "jobQueue", queue_ref)
        environment_ref = resources.get("compute_environment_arn") or resources.get("name")
        environment = self._describe_ce(environment_ref) if environment_ref else None
        if environment is None:
            return "done"
        return self._take_down(environment, "compute environment", "computeEnvironment", environment_ref)

    def _take_down(self, current: dict, what: str, parameter: str, ref: str) -> str:
        if current.get("status") in _BUSY:
            return "busy"
        operation = "job_queue" if parameter == "jobQueue" else "compute_environment"
        if current.get("state") != "DISABLED":
            self.call(f"update_{operation}", f"disabling the {what}", **{parameter: ref, "state": "DISABLED"})
        else:
            self.call(f"delete_{operation}", f"deleting the {what}", **{parameter: ref})
        return "progress"

    # --- the whole job, waiting -------------------------------------------------------------------
    def create(self, workspace: str, name: str, settings: dict) -> dict:
        """start → compute environment VALID → queue; what was made goes with a failure."""
        resources = self.start(workspace, name, settings)
        if not resources["created"]:
            return resources
        try:
            self._wait_until_ready(resources)
            resources = {**resources, "job_queue_arn": self.create_queue(workspace, name, resources)}
        except BaseException:
            # No orphan: what this call made goes with its failure (a failed cleanup is logged, and the
            # original error is the one reported).
            try:
                self.delete(resources)
            except NimbusError:
                pass
            raise
        return resources

    def attach(self, job_queue_arn: str) -> dict:
        found = self.call("describe_job_queues", "reading the job queue", field="settings.job_queue_arn",
                          jobQueues=[job_queue_arn])["jobQueues"]
        if not found:
            raise Invalid(f"job queue {job_queue_arn} not found in this account and region",
                          field="settings.job_queue_arn")
        queue = found[0]
        if queue.get("state") != "ENABLED":
            raise Invalid(f"job queue {job_queue_arn} is {queue.get('state')}: enable it first",
                          field="settings.job_queue_arn")
        return {"job_queue_arn": queue["jobQueueArn"], "created": False, "platform": self._platform(queue)}

    def _platform(self, queue: dict) -> str:
        arns = [entry["computeEnvironment"] for entry in queue.get("computeEnvironmentOrder") or []]
        if not arns:
            return spec_module.EC2
        environments = self.call("describe_compute_environments", "reading the queue's compute environments",
                                 computeEnvironments=arns)["computeEnvironments"]
        kinds = {(ce.get("computeResources") or {}).get("type", "EC2") for ce in environments}
        return spec_module.FARGATE if kinds and all(k.startswith("FARGATE") for k in kinds) else spec_module.EC2

    def delete(self, resources: dict) -> None:
        """Disable then delete the queue, then the compute environment, waiting for each; attached queues
        are left alone. A queue made but never recorded is found by its name."""
        if not resources.get("created"):
            return
        queue = resources.get("job_queue_arn") or resources.get("name")
        if queue:
            self._delete_job_queue(queue)
        environment = resources.get("compute_environment_arn") or resources.get("name")
        if environment:
            self._delete_compute_environment(environment)

    # --- waiting steps ----------------------------------------------------------------------------
    def _delete_job_queue(self, arn: str) -> None:
        queue = self._describe_queue(arn)
        if queue is None:
            return
        if queue.get("state") != "DISABLED":
            self._settled(lambda: self._describe_queue(arn), "job queue")
            self.call("update_job_queue", "disabling the job queue", jobQueue=arn, state="DISABLED")
        self._settled(lambda: self._describe_queue(arn), "job queue")
        self.call("delete_job_queue", "deleting the job queue", jobQueue=arn)
        # The compute environment cannot go while a queue still names it.
        self._settled(lambda: self._describe_queue(arn), "job queue", until_gone=True)

    def _delete_compute_environment(self, arn: str) -> None:
        try:
            environment = self._describe_ce(arn)
            if environment is None:
                return
            if environment.get("state") != "DISABLED":
                self._settled(lambda: self._describe_ce(arn), "compute environment")
                self.call("update_compute_environment", "disabling the compute environment",
                          computeEnvironment=arn, state="DISABLED")
            self._settled(lambda: self._describe_ce(arn), "compute environment")
            self.call("delete_compute_environment", "deleting the compute environment", computeEnvironment=arn)
        except NimbusError:
            logger.error("compute environment %s could not be deleted; delete it by hand", arn)
            raise

    def _wait_until_ready(self, resources: dict) -> None:
        deadline = time.monotonic() + self.max_wait_seconds
        while True:
            phase, reason = self.status(resources)
            if phase == "ready":
                return
            if phase == "failed":
                raise Invalid(f"the compute environment is not usable: {reason}", field="settings")
            if time.monotonic() >= deadline:
                raise Unavailable(f"the compute environment is still being created after "
                                  f"{self.max_wait_seconds:.0f} s; retry later")
            self._sleep(self.poll_seconds)

    def _describe_ce(self, arn: str) -> dict | None:
        found = self.call("describe_compute_environments", "reading the compute environment",
                          computeEnvironments=[arn])["computeEnvironments"]
        return found[0] if found and found[0].get("status") != "DELETED" else None

    def _describe_queue(self, arn: str) -> dict | None:
        found = self.call("describe_job_queues", "reading the job queue", jobQueues=[arn])["jobQueues"]
        return found[0] if found and found[0].get("status") != "DELETED" else None

    def _settled(self, describe: Callable[[], dict | None], what: str, until_gone: bool = False) -> dict | None:
        """Poll until the resource is no longer CREATING/UPDATING/DELETING (or gone); bounded."""
        deadline = time.monotonic() + self.max_wait_seconds
        while True:
            current = describe()
            busy = current is not None and (until_gone or current.get("status") in _BUSY)
            if not busy:
                return current
            if time.monotonic() >= deadline:
                raise Unavailable(f"the {what} is still {current.get('status')} after {self.max_wait_seconds:.0f} s; "
                                  "retry later")
            self._sleep(self.poll_seconds)


# --- dispatch -------------------------------------------------------------------------------------
