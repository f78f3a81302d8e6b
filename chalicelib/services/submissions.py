"""Submitting a script run: a Queued run with its snapshot and configuration, handed to a dispatcher.

A client token makes submission safe to retry: the first submit records it beside the run, in the
same transaction, and a repeat returns that run instead of creating another.
"""
from __future__ import annotations

from dataclasses import replace

from chalicelib.compute.dispatcher import Dispatcher
from chalicelib.errors import Conflict, Invalid
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.services.compute_settings import RESOURCES, check_resources
from chalicelib.services.compute_targets import LOCAL, ComputeTargets, Provisioner
from chalicelib.services.environments import Environments, environment_for
from chalicelib.services.identity import Principal
from chalicelib.services.run_datasets import pin_datasets
from chalicelib.services.runs import Runs
from chalicelib.store.table import Check, ConditionFailed, Key, Operation, Put, attr_eq, item_absent
from nimbus.runtime.job_spec import JobSpec


def submission_key(workspace: str, client_token: str) -> Key:
    return Key(table_keys.workspace_pk(workspace), f"SUBMIT#{client_token}")


class Submissions:
    def __init__(self, ctx: Context, dispatcher: Dispatcher | None, provisioner: Provisioner | None = None):
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.provisioner = provisioner  # moves a target still being created along (ComputeTargets.usable)

    def submit(self, principal: Principal, workspace: str, experiment: str | None, *, snapshot_id: str,
               run_config: dict, git: dict | None = None, ci: dict | None = None, client_token: str | None = None,
               tags: dict | None = None, properties: dict | None = None, display_name: str | None = None,
               parent_id: str | None = None) -> tuple[dict, bool]:
        """(the run, whether it is new). A repeated client token returns the first run."""
        runs = Runs(self.ctx)
        if client_token:
            earlier = self._earlier(workspace, client_token)
            if earlier is not None:
                return earlier, False
        if self.dispatcher is None:
            raise Invalid("this deployment runs no submitted jobs", field="run_config.compute")
        target = ComputeTargets(self.ctx, self.provisioner).usable(workspace, run_config.get("compute") or LOCAL)
        if self.ctx.table.get(table_keys.workspace_pk(workspace), f"SNAPSHOT#{snapshot_id}") is None:
            raise Invalid(f"snapshot {snapshot_id} not found in workspace {workspace!r}; upload it first",
                          field="snapshot_id")
        self._check_secrets(workspace, run_config.get("secret_variables") or {})
        run_id, extra = new_id(self.ctx.clock), []
        if client_token:  # recorded in the run's own transaction: a repeat finds it or loses the race
            key = submission_key(workspace, client_token)
            extra.append(Put({"pk": key.pk, "sk": key.sk, "entity": "submission", "run_id": run_id}, item_absent()))
        # The inputs' dataset versions are pinned too (their uses recorded with the run), the outputs' paths fixed.
        run_config, input_writes = pin_datasets(self.ctx, workspace, run_id, run_config)
        extra.extend(input_writes)
        # The environment's version is pinned in the stored run_config and marked used in this transaction.
        environment, environment_writes, run_config = environment_for(self.ctx, workspace, run_config)
        extra.extend(environment_writes)
        if environment is not None and target is not None and target["type"] == "batch":
            image = Environments(self.ctx).built_image(workspace, environment, "run_config.environment")
            environment = {**environment, "image_uri": image}
        spec = replace(job_spec(run_id, workspace, run_config, target), environment=environment)
        queued = self.dispatcher.queue_entry(spec)
        if queued is not None:
            extra.append(queued)
        extra.extend(active_entry(spec, self.ctx.now()))
        submission = {"snapshot_id": snapshot_id, "run_config": run_config, "git": git, "ci": ci,
                      "compute_target": spec.compute}
        try:
            run = runs.create(principal, workspace, experiment, parent_id=parent_id, tags=tags, properties=properties,
                              display_name=display_name, status="Queued", submission=submission,
                              extra_operations=extra, run_id=run_id)
        except ConditionFailed:
            earlier = self._earlier(workspace, client_token) if client_token else None
            if earlier is not None:  # a concurrent submit with the same token won
                return earlier, False
            ComputeTargets(self.ctx, self.provisioner).usable(workspace, spec.compute)  # raises when the target is going away
            raise Conflict("the run could not be queued: its compute target changed meanwhile; retry") from None
        self.dispatcher.submit(spec)
        return run, True

    def cancel(self, workspace: str, run: dict) -> bool:
        """Stop a canceled run's job on its target (False when no dispatcher here knows it)."""
        if self.dispatcher is None:
            return False
        compute = run.get("compute_target") or LOCAL
        target = ComputeTargets(self.ctx).find(workspace, compute)
        if compute != LOCAL and target is None:
            return False  # its target is gone: so is the job
        return self.dispatcher.cancel_job(JobSpec(run["id"], workspace, None, compute=compute, target=target))

    def _check_secrets(self, workspace: str, secret_variables: dict) -> None:
        """Each secret the run names exists now (the runner reads its value when the run starts)."""
        for variable, name in secret_variables.items():
            if self.ctx.table.get_item(table_keys.workspace_secret(workspace, name)) is None:
                raise Invalid(f"run_config.secret_variables.{variable}: workspace {workspace!r} has no secret "
                              f"{name!r}; set it first (nimbus secret set {name})",
                              field=f"run_config.secret_variables.{variable}")

    def _earlier(self, workspace: str, client_token: str) -> dict | None:
        record = self.ctx.table.get_item(submission_key(workspace, client_token))
        return Runs(self.ctx).get(workspace, record["run_id"]) if record else None


def job_spec(run_id: str, workspace: str, run_config: dict, target: dict | None) -> JobSpec:
    """What the dispatcher needs; the resources are checked against the target's `max_job_*`."""
    compute = run_config.get("compute") or LOCAL
    asked = {k: v for k, v in (run_config.get("resources") or {}).items() if v is not None}
    if target is not None and target["type"] == "batch":  # a Batch job always states its request
        asked = {**{k: target["settings"][k] for k in RESOURCES if k in target["settings"]}, **asked}
    resources = check_resources(compute, target["settings"] if target else {}, asked) or None
    return JobSpec(run_id, workspace, run_config.get("max_run_duration_s"), compute=compute, target=target,
                   node_count=run_config.get("node_count") or 1,
                   process_count_per_node=run_config.get("process_count_per_node") or 1, resources=resources)


def active_entry(spec: JobSpec, now: str) -> list[Operation]:
    """The run's ACTIVE item, and a check that its target is still usable: a target being deleted either
    fails this transaction or sees the item (docs/compute.md)."""
    key = table_keys.active_run(spec.workspace, spec.compute, spec.run_id)
    operations: list[Operation] = [Put({"pk": key.pk, "sk": key.sk, "entity": "active_run", "workspace": spec.workspace,
                                        "target": spec.compute, "created": now}, item_absent())]
    if spec.target is not None:
        operations.append(Check(table_keys.compute_target(spec.workspace, spec.compute), attr_eq("state", "Succeeded")))
    return operations
