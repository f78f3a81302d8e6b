"""One deployment revision's rollout on AWS Lambda, a step at a time (LambdaHost starts and advances it).

Lambda takes a while to make a function usable: a new function is Pending, an updated one's
LastUpdateStatus InProgress, for seconds to minutes. No request waits for that: a rollout is a short
list of steps, each taken once the function is ready for it, by whoever looks next.

  write      create the function (code and configuration at once), or update its code
  configure  an update only: its configuration (Lambda takes code and configuration apart)
  publish    a version, with the CodeSha256 and RevisionId read: a function changed since is refused
  route      once the version is Active: the alias routes to it, the version it replaces is deleted,
             concurrency is applied

`advance` reads the function once per step and takes every step that is ready now, never sleeping; a
step Lambda is busy with (throttled, or an update in progress) is left for the next look. The rollout is
plain JSON kept by the service on the deployment's item: the FunctionPlan, the code to write, the
CodeSha256, the published version and the serving revision it replaces.
"""
from __future__ import annotations

from dataclasses import asdict

from chalicelib.errors import Conflict, NimbusError, Unavailable
from chalicelib.hosting import lambda_package as pkg
from chalicelib.hosting.lambda_calls import delete_version, find_alias, translated
from chalicelib.hosting.port import FAILED, IN_PROGRESS, SUCCEEDED, HostState
from chalicelib.store.blobs import Blobs

WRITE, CONFIGURE, PUBLISH, ROUTE = "write", "configure", "publish", "route"
_KEPT = ("function_version", "source_manifest")  # what a rollout keeps of the revision it replaces


class LambdaRollout:
    def __init__(self, client, blobs: Blobs):
        self.client = client
        self.blobs = blobs

    def begin(self, plan: pkg.FunctionPlan, code: dict, staged: str | None, code_sha256: str | None,
              existing: dict | None, previous: dict | None) -> HostState:
        """A new rollout of `plan`, taken as far as it goes now. `staged` is the zip's key in the bucket
        (deleted once Lambda has its copy); `existing` the function's configuration as just read."""
        rollout = {"step": WRITE, "plan": asdict(plan), "code": code, "staged": staged, "code_sha256": code_sha256,
                   "create": existing is None, "version": None,
                   "previous": {k: (previous or {})[k] for k in _KEPT if (previous or {}).get(k)}}
        return self.advance(rollout, existing)

    def advance(self, rollout: dict, config: dict | None = None) -> HostState:
        """The rollout one look further: every step that is ready now (`config`: the function as just read)."""
        plan = pkg.FunctionPlan(**rollout["plan"])
        steps = {WRITE: self._write, CONFIGURE: self._configure, PUBLISH: self._publish, ROUTE: self._route}
        try:
            for _ in range(len(steps) + 1):  # each step once; the write step twice when a create turns update
                step = rollout["step"]
                if config is None and not (step == WRITE and rollout["create"]):
                    config = self._read(plan.function_name, rollout["version"] if step == ROUTE else None)
                outcome = steps[step](plan, rollout, config)
                if outcome is None:  # Lambda is not ready for the step yet
                    break
                if isinstance(outcome, HostState):
                    return outcome
                rollout, config = outcome, None
        except (Unavailable, Conflict):  # throttled, or Lambda is still applying a change: the next look goes on
            pass
        except NimbusError as error:
            return self.failed(rollout, error.message)
        return HostState(IN_PROGRESS, rollout=rollout)

    def failed(self, rollout: dict, reason: str) -> HostState:
        """Failed with `reason`, what the rollout made undone; the revision that served before goes on."""
        self.abandon(rollout)
        return HostState(FAILED, reason)

    def abandon(self, rollout: dict) -> None:
        """The staged zip, a version not routed yet and this revision's source manifest, deleted."""
        plan = pkg.FunctionPlan(**rollout["plan"])
        if rollout.get("staged"):
            self.blobs.delete(rollout["staged"])
        if rollout.get("version"):
            delete_version(self.client, plan.function_name, rollout["version"], still_routed_ok=True)
        if plan.source_manifest and plan.source_manifest != rollout["previous"].get("source_manifest"):
            self.blobs.delete(plan.source_manifest)

    # --- the steps: each answers None (not ready), the rollout moved on, or how it ended ---------------------
    def _write(self, plan: pkg.FunctionPlan, rollout: dict, config: dict | None):
        name = plan.function_name
        if config is not None and _phase(name, config)[0] == "waiting":
            return None  # an earlier change of the function is still being applied
        if config is None:
            try:
                with translated(f"creating function {name}"):
                    answer = self.client.create_function(**plan.create_function(rollout["code"]))
            except Conflict:  # it exists (an earlier look made it, and its answer was lost): update it
                return {**rollout, "create": False}
        else:
            with translated(f"updating the code of {name}"):
                answer = self.client.update_function_code(**plan.update_function_code(rollout["code"]))
        if rollout["staged"]:
            self.blobs.delete(rollout["staged"])  # Lambda keeps its own copy of the code
        return {**rollout, "step": PUBLISH if config is None else CONFIGURE, "staged": None,
                "code_sha256": rollout["code_sha256"] or answer.get("CodeSha256", "")}

    def _configure(self, plan: pkg.FunctionPlan, rollout: dict, config: dict):
        phase, reason = _phase(plan.function_name, config)
        if phase != "ready":
            return None if phase == "waiting" else self.failed(rollout, reason)
        with translated(f"updating the configuration of {plan.function_name}"):
            self.client.update_function_configuration(**plan.update_function_configuration())
        return {**rollout, "step": PUBLISH}

    def _publish(self, plan: pkg.FunctionPlan, rollout: dict, config: dict):
        name = plan.function_name
        phase, reason = _phase(name, config)
        if phase != "ready":
            return None if phase == "waiting" else self.failed(rollout, reason)
        held = config.get("Environment", {}).get("Variables", {})
        if config.get("CodeSha256") != rollout["code_sha256"] or held != plan.environment:
            return self.failed(rollout, f"function {name} was changed by another deployment of the same "
                                              "endpoint while this one was being published; deploy again")
        with translated(f"publishing a version of {name}"):
            published = self.client.publish_version(**plan.publish_version(rollout["code_sha256"],
                                                                           config.get("RevisionId")))
        return {**rollout, "step": ROUTE, "version": published["Version"]}

    def _route(self, plan: pkg.FunctionPlan, rollout: dict, config: dict):
        phase, reason = _phase(plan.function_name, config)
        if phase != "ready":
            return None if phase == "waiting" else self.failed(rollout, reason)
        version, previous = rollout["version"], rollout["previous"]
        replaced = self._route_new_version(plan, version, previous.get("function_version"))
        if replaced and previous.get("source_manifest") not in (None, plan.source_manifest):
            self.blobs.delete(previous["source_manifest"])
        details = {"function_name": plan.function_name, "function_version": version, "alias": pkg.ALIAS,
                   "code_sha256": rollout["code_sha256"]}
        if plan.image_uri:
            details.update(package_type=pkg.IMAGE, image_uri=plan.image_uri, source_manifest=plan.source_manifest)
        try:
            self._apply_concurrency(plan)
        except Unavailable:
            raise  # routed already: the next look routes again (a no-op) and retries this
        except NimbusError as error:  # the new version serves, without the concurrency asked for
            return HostState(FAILED, error.message, details=details)
        return HostState(SUCCEEDED, details=details)

    def _route_new_version(self, plan: pkg.FunctionPlan, version: str, old: str | None) -> bool:
        """A new endpoint routes everything to its first deployment; an updated deployment keeps its
        weight (its old version is swapped for the new one in the alias, then deleted). True when an old
        version was there and is gone now."""
        name = plan.function_name
        alias = find_alias(self.client, name)
        if alias is None:
            with translated(f"creating alias {pkg.ALIAS} of {name}"):
                self.client.create_alias(**plan.create_alias(version))
        elif old and old != version:
            weights = dict(alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {}))
            primary = alias["FunctionVersion"]
            if primary == old or old in weights:
                if old in weights:
                    weights[version] = weights.pop(old)
                with translated(f"updating alias {pkg.ALIAS} of {name}"):
                    self.client.update_alias(FunctionName=name, Name=pkg.ALIAS,
                                             FunctionVersion=version if primary == old else primary,
                                             RoutingConfig={"AdditionalVersionWeights": weights})
        if old and old != version:
            return delete_version(self.client, name, old, still_routed_ok=True)
        return False

    def _apply_concurrency(self, plan: pkg.FunctionPlan) -> None:
        reserved = plan.put_function_concurrency()
        if reserved:
            with translated(f"reserving concurrency for {plan.function_name}"):
                self.client.put_function_concurrency(**reserved)
        provisioned = plan.put_provisioned_concurrency_config()
        if provisioned:
            with translated(f"provisioning concurrency for {plan.function_name}:{pkg.ALIAS}"):
                self.client.put_provisioned_concurrency_config(**provisioned)

    def _read(self, name: str, qualifier: str | None = None) -> dict:
        with translated(f"reading function {name}"):
            return self.client.get_function_configuration(FunctionName=name,
                                                          **({"Qualifier": qualifier} if qualifier else {}))


def _phase(name: str, config: dict) -> tuple[str, str | None]:
    """("ready" | "waiting" | "failed", reason) of a function (or version) as read."""
    state, update = config.get("State", "Active"), config.get("LastUpdateStatus", "Successful")
    if state == "Failed":
        return "failed", f"Lambda could not create function {name}: {config.get('StateReason', state)}"
    if update == "Failed":
        return "failed", f"Lambda could not update function {name}: {config.get('LastUpdateStatusReason', update)}"
    if state == "Pending" or update == "InProgress":
        return "waiting", None
    return "ready", None
