"""The provisioner port's test double: AWS Batch itself is exercised by tests/server/unit/test_batch.py."""
from __future__ import annotations

import threading
import time
from collections import Counter

from chalicelib.errors import Invalid


class StagedProvisioner:
    """Each resource is "waiting" for `waits` looks, then ready (or failed with `fail_with`); teardown
    takes `dismantle_rounds` rounds."""

    def __init__(self, waits: int = 0):
        self.waits = waits
        self.refuse: str | None = None  # start is refused with this message
        self.fail_with: str | None = None  # the compute environment turns INVALID with this reason
        self.orphan: dict | None = None  # what find_started finds
        self.queue_seconds = 0.0  # how long making a queue takes (races)
        self.dismantle_rounds = 1
        self.started: list[tuple[str, str, dict]] = []
        self.queues: list[str] = []
        self.dismantled: list[dict] = []
        self.looks: Counter = Counter()
        self._lock = threading.Lock()

    def start(self, workspace: str, name: str, settings: dict) -> dict:
        if self.refuse:
            raise Invalid(self.refuse, field="settings.subnets")
        self.started.append((workspace, name, settings))
        if "job_queue_arn" in settings:
            return {"job_queue_arn": settings["job_queue_arn"], "created": False}
        return {"compute_environment_arn": f"arn:ce/{name}", "name": name, "created": True}

    def find_started(self, workspace: str, name: str) -> dict | None:
        return self.orphan

    def status(self, resources: dict) -> tuple[str, str | None]:
        arn = resources.get("job_queue_arn") or resources["compute_environment_arn"]
        with self._lock:
            self.looks[arn] += 1
            looks = self.looks[arn]
        if self.fail_with and "job_queue_arn" not in resources:
            return "failed", f"the compute environment is INVALID: {self.fail_with}"
        return ("waiting", None) if looks <= self.waits else ("ready", None)

    def create_queue(self, workspace: str, name: str, resources: dict) -> str:
        time.sleep(self.queue_seconds)
        with self._lock:
            self.queues.append(name)
        return f"arn:jq/{name}"

    def dismantle(self, resources: dict) -> bool:
        self.dismantled.append(resources)
        return len(self.dismantled) >= self.dismantle_rounds
