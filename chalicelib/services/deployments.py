"""Endpoints and their deployments: what runs where, who may score it, and how traffic is split.

The service owns the records and the rules; a FunctionHost (AWS Lambda or local scoring hosts) makes
a deployment run. A deploy records the revision `Creating` (`Updating` for a later one) and has the host
start it without waiting; reads and the sweep take it on to `Succeeded` or `Failed`
(deployment_lifecycle.py). Changes to one endpoint are serialised by a lease on its item
(endpoint_lease.py), because on AWS all deployments of an endpoint are versions of one Lambda function;
for the same reason one deployment of an endpoint rolls out at a time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets as secrets_module

from chalicelib.errors import Conflict, Invalid, NotFound, Unauthorized, Unavailable
from chalicelib.hosting.port import (
    SUCCEEDED, DeploymentConfig, DeploymentEnvironment, DeploymentSpec, EndpointTarget, FunctionHost, ScoreResult,
    SourceFile,
)
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.validation import check_name
from chalicelib.services.audit import Audit
from chalicelib.services.deployment_lifecycle import ROLLING_OUT, DeploymentLifecycle, pending_entry, pending_key
from chalicelib.services.endpoint_lease import EndpointLease
from chalicelib.services.environments import Environments
from chalicelib.services.identity import Principal
from chalicelib.services.registry import Registry, model_files_of
from chalicelib.services.snapshots import Snapshots
from chalicelib.services.endpoint_telemetry import EndpointTelemetry
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.secrets import Secrets
from chalicelib.store.table import ConditionFailed, Delete, Put, Query, Update, attr_eq, item_absent, item_exists

NAME = re.compile(r"[a-z][a-z0-9-]{1,31}")
NAME_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter"
KEY_NAMES = ("primary", "secondary")
MAX_MODELS = 20


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "nmbk_" + secrets_module.token_urlsafe(32)


class Deployments:
    def __init__(self, ctx: Context, host: FunctionHost | None, secrets: Secrets):
        self.ctx = ctx
        self.host = host
        self.secrets = secrets
        self.registry = Registry(ctx)
        self.lifecycle = DeploymentLifecycle(ctx, host)

    # --- deploy --------------------------------------------------------------------------------
    def deploy(self, principal: Principal, workspace: str, endpoint: str, name: str, models: list[str],
               snapshot_id: str, entry_script: str, environment: str | None, config: DeploymentConfig) -> dict:
        """The deployment as recorded: Creating or Updating while its host's work goes on, or Succeeded or
        Failed at once where the host settles in one step (local scoring hosts)."""
        check_name(endpoint, NAME, "endpoint", NAME_RULE)
        check_name(name, NAME, "deployment", NAME_RULE)
        host = self._host()
        versions = self._model_versions(workspace, models)
        source = self._source(workspace, snapshot_id, entry_script)
        scoring_environment, environment_item = self._environment(workspace, environment)
        spec = DeploymentSpec(
            workspace, endpoint, name, 0, tuple(model_files_of(item) for item in versions.values()), source,
            entry_script, scoring_environment, config,
            capture_prefix=self._capture_prefix(workspace, endpoint) if config.capture_rate > 0 else "")
        host.check(spec)  # before anything is written, the endpoint included
        with self._lease(workspace, endpoint, principal):
            previous = self._deployments_at_rest(workspace, endpoint).get(name)
            revision = (previous or {}).get("revision", 0) + 1
            item = self._new_item(principal, workspace, endpoint, name, sorted(versions), snapshot_id, entry_script,
                                  scoring_environment and scoring_environment.ref, config, revision, previous)
            self._write_deployment(principal, workspace, endpoint, item, previous, versions, environment_item)
            item = self.lifecycle.begin(item, dataclasses.replace(spec, revision=revision),
                                        (previous or {}).get("host"))
        return deployment_view(item)

    def _model_versions(self, workspace: str, models: list[str]) -> dict[str, dict]:
        """'name:version' → the stored version, each read once: its files and its in-use mark come from it."""
        if not 1 <= len(models) <= MAX_MODELS:
            raise Invalid(f"models must name 1-{MAX_MODELS} model versions", field="models")
        versions = {}
        for index, ref in enumerate(models):
            try:
                item = self.registry.version_item(workspace, ref)
            except (Invalid, NotFound) as error:
                raise type(error)(f"models[{index}]: {error.message}", field=f"models[{index}]") from None
            versions[f"{item['name']}:{int(item['version'])}"] = item
        return versions

    def _deployments_at_rest(self, workspace: str, endpoint: str) -> dict[str, dict]:
        """The endpoint's deployments, by name, under its lease. One still rolling out is taken a look further
        first; while it goes on it refuses the deploy: one rollout of an endpoint's function at a time."""
        deployments = {}
        for item in self._deployment_items(workspace, endpoint):
            item = self.lifecycle.advance_held(item)
            if item["state"] in ROLLING_OUT:
                raise Conflict(f"deployment {item['name']!r} of endpoint {endpoint!r} is {item['state']}: deploy "
                               "again once it is Succeeded or Failed", field="deployment")
            deployments[item["name"]] = item
        return deployments

    def _source(self, workspace: str, snapshot_id: str, entry_script: str) -> tuple[SourceFile, ...]:
        if not isinstance(snapshot_id, str) or not snapshot_id:
            raise Invalid("snapshot_id is required: upload the source folder as a snapshot first", field="snapshot_id")
        try:
            files = Snapshots(self.ctx).stored_files(workspace, snapshot_id)
        except NotFound as error:
            raise NotFound(error.message, field="snapshot_id") from None
        if entry_script not in {path for path, _, _ in files}:
            raise Invalid(f"entry_script {entry_script!r} is not in snapshot {snapshot_id[:12]}…", field="entry_script")
        return tuple(SourceFile(path, key, size) for path, key, size in files)

    def _environment(self, workspace: str, ref: str | None) -> tuple[DeploymentEnvironment | None, dict | None]:
        """The environment version `ref` names, pinned to 'name:version' (and on AWS, its built image)."""
        if ref is None:
            return None, None
        environments = Environments(self.ctx)
        item = environments.resolve(workspace, ref, field="environment")
        image = environments.built_image(workspace, item, "environment") if self.ctx.settings.backend == "aws" else None
        return DeploymentEnvironment(f"{item['name']}:{int(item['version'])}", item["hash"], item["definition"],
                                     image), item

    def _new_item(self, principal, workspace, endpoint, name, models, snapshot_id, entry_script, environment,
                  config, revision, previous) -> dict:
        key = table_keys.deployment(workspace, endpoint, name)
        now = self.ctx.now()
        return {"pk": key.pk, "sk": key.sk, "entity": "deployment", "workspace": workspace, "endpoint": endpoint,
                "name": name, "models": models, "snapshot_id": snapshot_id, "entry_script": entry_script,
                "environment": environment, "config": config_dict(config), "revision": revision,
                "state": "Updating" if previous else "Creating", "error": None, "progress": 0,
                "host": (previous or {}).get("host") or {},
                "created": (previous or {}).get("created", now), "created_by": (previous or {}).get("created_by",
                                                                                                      principal.user),
                "updated": now, "updated_by": principal.user}

    def _write_deployment(self, principal: Principal, workspace: str, endpoint: str, item: dict,
                          previous: dict | None, versions: dict[str, dict], environment: dict | None) -> None:
        """The deployment, its endpoint's traffic entry, its entry in the sweep's list, the model versions'
        usage (from the versions as read), its environment version marked used (so its definition can no
        longer change) and its audit entry, in one transaction."""
        usage_key = f"{endpoint}/{item['name']}"
        before = set((previous or {}).get("models", []))
        after = set(versions)
        operations = [Put(item, item_absent() if previous is None else attr_eq("revision", previous["revision"]))]
        # The endpoint's first deployment takes all its traffic; later ones start at 0. (The lease keeps
        # other changes of the endpoint out meanwhile.)
        first = not self._endpoint_item(workspace, endpoint).get("traffic")
        operations.append(Update(table_keys.endpoint(workspace, endpoint),
                                 set_if_absent={("traffic", item["name"]): 100 if first else 0},
                                 condition=item_exists()))
        operations.append(Put(pending_entry(item)))
        for ref in sorted(after - before):
            model, version = ref.rsplit(":", 1)
            operations += self.registry.use_operations(workspace, model, int(version), usage_key, item=versions[ref])
        for ref in sorted(before - after):
            model, version = ref.rsplit(":", 1)
            operations += self.registry.release_operations(workspace, model, int(version), usage_key)
        environment_at = len(operations)
        if environment is not None:
            operations += Environments(self.ctx).use_operations(workspace, environment)
        details = {"endpoint": endpoint, "revision": item["revision"], "models": item["models"],
                   "snapshot_id": item["snapshot_id"], "entry_script": item["entry_script"],
                   "environment": item.get("environment")}
        operations.append(Audit(self.ctx).entry(principal, workspace, "deployment.updated" if previous else
                                                "deployment.created", f"{endpoint}/{item['name']}", details))
        try:
            self.ctx.table.transact(operations)
        except ConditionFailed as failure:
            if failure.index == 0:
                raise Conflict(f"deployment {item['name']!r} changed meanwhile; try again", field="deployment") from None
            if failure.index == 1:
                raise NotFound(f"endpoint {endpoint!r} was deleted meanwhile", field="endpoint") from None
            if failure.index is not None and failure.index >= environment_at:
                raise Conflict(f"environment {item['environment']} was changed or deleted meanwhile; deploy again",
                               field="environment") from None
            raise Conflict("a model version changed meanwhile (deleted?); check the models and try again",
                           field="models") from None

    def record_state(self, workspace: str, endpoint: str, name: str, revision: int, state: str,
                     error: str | None) -> None:
        """A host's own report (a local host that keeps crashing, or came back): deployment_lifecycle.py."""
        self.lifecycle.record_state(workspace, endpoint, name, revision, state, error)

    def sweep(self) -> dict[str, int]:
        """Every deployment rolling out, one look further (the 5-minute schedule calls it)."""
        return self.lifecycle.sweep()

    # --- endpoints -----------------------------------------------------------------------------
    def _create_endpoint(self, principal: Principal, workspace: str, endpoint: str) -> None:
        Workspaces(self.ctx).record(workspace)
        pair = {name: new_key() for name in KEY_NAMES}
        self.secrets.put(self._secret_name(workspace, endpoint), json.dumps(pair))
        key = table_keys.endpoint(workspace, endpoint)
        item = {"pk": key.pk, "sk": key.sk, "entity": "endpoint", "workspace": workspace, "name": endpoint,
                "traffic": {}, "key_hashes": {n: key_digest(v) for n, v in pair.items()},
                "created": self.ctx.now(), "created_by": principal.user}
        try:
            self.ctx.table.put(item, item_absent())
        except ConditionFailed:
            return  # created concurrently: its keys stand (ours were overwritten in the secret store first)
        self._host().endpoint_keys_changed(workspace, endpoint, list(item["key_hashes"].values()))

    def get_endpoint(self, workspace: str, endpoint: str) -> dict:
        """The endpoint with its deployments; those rolling out are taken a look further first."""
        item = self._endpoint_item(workspace, endpoint)
        deployments = [self.lifecycle.refresh(d) for d in self._deployment_items(workspace, endpoint)]
        return self._endpoint_view(item, deployments)

    def list_endpoints(self, workspace: str) -> dict:
        Workspaces(self.ctx).record(workspace)
        items = list(self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace), sk_prefix="ENDPOINT#")))
        deployments = list(self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace), sk_prefix="DEPLOY#")))
        return {"endpoints": [self._endpoint_view(item, [d for d in deployments if d["endpoint"] == item["name"]])
                              for item in items]}

    def set_traffic(self, workspace: str, endpoint: str, traffic: dict, by: Principal | None = None) -> dict:
        with self._lease(workspace, endpoint):
            deployments = {d["name"]: d for d in self._deployment_items(workspace, endpoint)}
            before = self._endpoint_item(workspace, endpoint)["traffic"]
            check_traffic(traffic, deployments, before)
            after = {n: traffic.get(n, 0) for n in deployments}
            self.ctx.table.transact([
                Update(table_keys.endpoint(workspace, endpoint), set={"traffic": after}, condition=item_exists()),
                Audit(self.ctx).entry(by, workspace, "endpoint.traffic_changed", endpoint,
                                      {"from": dict(before), "to": after}),
            ])
            self.lifecycle.route(workspace, endpoint)
        return self.get_endpoint(workspace, endpoint)

    def delete_endpoint(self, workspace: str, endpoint: str, by: Principal | None = None) -> dict:
        with self._lease(workspace, endpoint):
            removed = [self._remove_deployment(workspace, endpoint, d)
                       for d in self._deployment_items(workspace, endpoint)]
            self._host().remove_endpoint(workspace, endpoint)
            EndpointTelemetry(self.ctx).delete_endpoint(workspace, endpoint)
            self.secrets.delete(self._secret_name(workspace, endpoint))
            self.ctx.table.transact([
                Delete(table_keys.endpoint(workspace, endpoint)),
                Audit(self.ctx).entry(by, workspace, "endpoint.deleted", endpoint, {"deployments": removed}),
            ])
        return {"endpoint": endpoint, "deleted": True, "deployments": removed}

    # --- deployments ---------------------------------------------------------------------------
    def get_deployment(self, workspace: str, endpoint: str, name: str) -> dict:
        """The deployment; one rolling out is taken a look further first."""
        return deployment_view(self.lifecycle.refresh(self._deployment_item(workspace, endpoint, name)))

    def delete_deployment(self, workspace: str, endpoint: str, name: str, by: Principal | None = None) -> dict:
        with self._lease(workspace, endpoint):
            item = self._deployment_item(workspace, endpoint, name)
            traffic = self._endpoint_item(workspace, endpoint)["traffic"]
            others = [n for n in traffic if n != name]
            if traffic.get(name, 0) > 0 and others:
                raise Conflict(f"deployment {name!r} still takes {traffic[name]}% of endpoint {endpoint!r}'s "
                               f"traffic; move it to {', '.join(sorted(others))} first", field="deployment")
            audited = Audit(self.ctx).entry(by, workspace, "deployment.deleted", f"{endpoint}/{name}",
                                            {"endpoint": endpoint, "revision": item.get("revision")})
            self._remove_deployment(workspace, endpoint, item, audited)
            self.lifecycle.reroute(workspace, endpoint)
        return {"endpoint": endpoint, "deployment": name, "deleted": True}

    def _remove_deployment(self, workspace: str, endpoint: str, item: dict, audited: Put | None = None) -> str:
        """`audited`: the audit entry to write with it (an endpoint's deletion records one for them all)."""
        if item.get("rollout"):  # what its unfinished rollout made goes first
            self._host().abandon(item["rollout"])
        self._host().remove(workspace, endpoint, item["name"], item.get("host") or {})
        usage_key = f"{endpoint}/{item['name']}"
        operations = [Delete(table_keys.deployment(workspace, endpoint, item["name"])),
                      Update(table_keys.endpoint(workspace, endpoint), remove=[("traffic", item["name"])]),
                      Delete(pending_key(workspace, endpoint, item["name"]))]
        for ref in item.get("models", []):
            model, version = ref.rsplit(":", 1)
            operations += self.registry.release_operations(workspace, model, int(version), usage_key)
        self.ctx.table.transact(operations + ([audited] if audited else []))
        return item["name"]

    def logs(self, workspace: str, endpoint: str, name: str, tail: int) -> dict:
        item = self._deployment_item(workspace, endpoint, name)
        return {"logs": self._host().logs(workspace, endpoint, name, item.get("host") or {}, tail)}

    # --- keys ----------------------------------------------------------------------------------
    def get_keys(self, workspace: str, endpoint: str) -> dict:
        self._endpoint_item(workspace, endpoint)
        pair = json.loads(self.secrets.get(self._secret_name(workspace, endpoint)))
        return {f"{name}_key": pair[name] for name in KEY_NAMES}

    def regenerate_key(self, workspace: str, endpoint: str, which: str, by: Principal | None = None) -> dict:
        """The new key goes to the secret store first; its digest on the endpoint and the audit entry (which
        names the key, never its value) follow in one transaction."""
        if which not in KEY_NAMES:
            raise Invalid("key must be 'primary' or 'secondary'", field="key")
        with self._lease(workspace, endpoint):
            pair = json.loads(self.secrets.get(self._secret_name(workspace, endpoint)))
            pair[which] = new_key()
            self.secrets.put(self._secret_name(workspace, endpoint), json.dumps(pair))
            self.ctx.table.transact([
                Update(table_keys.endpoint(workspace, endpoint), set={("key_hashes", which): key_digest(pair[which])},
                       condition=item_exists()),
                Audit(self.ctx).entry(by, workspace, "endpoint.keys_regenerated", endpoint, {"which": which}),
            ])
            item = self._endpoint_item(workspace, endpoint)
            self._host().endpoint_keys_changed(workspace, endpoint, list(item["key_hashes"].values()))
        return {f"{name}_key": pair[name] for name in KEY_NAMES}

    # --- scoring -------------------------------------------------------------------------------
    def check_key(self, workspace: str, endpoint: str, authorization: str | None) -> dict:
        """The endpoint, when `authorization` holds one of its keys; Unauthorized otherwise."""
        item = self.ctx.table.get_item(table_keys.endpoint(workspace, endpoint))
        scheme, _, presented = (authorization or "").partition(" ")
        valid = item is not None and scheme.lower() == "bearer" and presented and any(
            hmac.compare_digest(key_digest(presented.strip()), digest) for digest in item["key_hashes"].values())
        if not valid:
            # The same answer for an unknown endpoint and a wrong key: keys are per endpoint.
            raise Unauthorized("a valid endpoint key is required: Authorization: Bearer <key>")
        return item

    def score(self, workspace: str, endpoint: str, authorization: str | None, body: bytes,
              content_type: str) -> ScoreResult:
        item = self.check_key(workspace, endpoint, authorization)
        deployments = {d["name"]: d for d in self._deployment_items(workspace, endpoint)}
        weighted = {n: w for n, w in item["traffic"].items() if w > 0 and n in deployments}
        if not weighted:
            raise Unavailable(f"endpoint {endpoint!r} has no deployment taking traffic")
        live = {n: w for n, w in weighted.items() if deployments[n]["state"] != "Creating"}
        if not live:  # its first deployment is on its way: nothing serves yet
            first = min(weighted)
            raise Unavailable(f"deployment {first!r} of endpoint {endpoint!r} is still Creating; score it once it "
                              "is Succeeded")
        target = EndpointTarget(workspace, endpoint, live, {n: deployments[n].get("host") or {} for n in live})
        return self._host().invoke(target, body, content_type)

    # --- helpers -------------------------------------------------------------------------------
    def _lease(self, workspace: str, endpoint: str, principal: Principal | None = None) -> EndpointLease:
        """The endpoint's lease; a deploy (`principal` given) makes the endpoint when it does not exist."""
        create = None if principal is None else (lambda: self._create_endpoint(principal, workspace, endpoint))
        return EndpointLease(self.ctx, workspace, endpoint, create=create)

    def _host(self) -> FunctionHost:
        if self.host is None:
            raise Unavailable("no scoring host is configured for this deployment of Nimbus")
        return self.host

    def _endpoint_item(self, workspace: str, endpoint: str) -> dict:
        item = self.ctx.table.get_item(table_keys.endpoint(workspace, endpoint))
        if item is None:
            raise NotFound(f"endpoint {endpoint!r} not found in workspace {workspace!r}", field="endpoint")
        return item

    def _deployment_item(self, workspace: str, endpoint: str, name: str) -> dict:
        item = self.ctx.table.get_item(table_keys.deployment(workspace, endpoint, name))
        if item is None:
            raise NotFound(f"deployment {name!r} not found in endpoint {endpoint!r}", field="deployment")
        return item

    def _deployment_items(self, workspace: str, endpoint: str) -> list[dict]:
        return list(self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace),
                                                   sk_prefix=table_keys.deployment_prefix(endpoint))))

    def _endpoint_view(self, item: dict, deployments: list[dict]) -> dict:
        return {"name": item["name"], "workspace": item["workspace"],
                "scoring_uri": f"{self.ctx.settings.public_url}/v1/workspaces/{item['workspace']}/endpoints/"
                               f"{item['name']}/score",
                "traffic": item.get("traffic", {}), "created": item["created"], "created_by": item["created_by"],
                "deployments": [deployment_view(d) for d in deployments]}

    def _capture_prefix(self, workspace: str, endpoint: str) -> str:
        return f"{Workspaces(self.ctx).record(workspace)['blob_prefix']}endpoints/{endpoint}/captures/"

    @staticmethod
    def _secret_name(workspace: str, endpoint: str) -> str:
        return f"endpoint-keys/{workspace}/{endpoint}"


def can_take_traffic(deployment: dict, weight_now: int) -> bool:
    """Succeeded; or taking traffic already (the revision before serves while it is Updating, or after an
    update Failed): its weight may change, but traffic cannot be given to a deployment that has none."""
    return deployment.get("state") == SUCCEEDED or (weight_now > 0 and deployment.get("state") != "Creating")


def check_traffic(traffic: dict, deployments: dict[str, dict], current: dict[str, int]) -> None:
    if not isinstance(traffic, dict) or not traffic:
        raise Invalid("traffic must map deployment names to weights", field="traffic")
    for name, weight in traffic.items():
        if name not in deployments:
            raise Invalid(f"traffic names deployment {name!r}, which this endpoint does not have",
                          field=f"traffic.{name}")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise Invalid(f"traffic.{name} must be an integer from 0 to 100", field=f"traffic.{name}")
        if weight > 0 and not can_take_traffic(deployments[name], current.get(name, 0)):
            raise Conflict(f"deployment {name!r} is {deployments[name].get('state')}; only a Succeeded deployment "
                           "can be given traffic", field=f"traffic.{name}")
    if sum(traffic.values()) != 100:
        raise Invalid(f"traffic weights must sum to 100, not {sum(traffic.values())}", field="traffic")


def config_dict(config: DeploymentConfig) -> dict:
    return {name: getattr(config, name) for name in DeploymentConfig.__dataclass_fields__}


def deployment_view(item: dict) -> dict:
    host = item.get("host") or {}
    view = {name: item.get(name) for name in ("name", "endpoint", "models", "snapshot_id", "entry_script",
                                              "environment", "config", "revision", "state", "error", "created",
                                              "created_by", "updated", "updated_by")}
    view["host"] = {k: v for k, v in host.items() if k in ("host_url", "function_name", "function_version", "port")}
    if item.get("state") in ROLLING_OUT:
        view["step"] = (item.get("rollout") or {}).get("step")  # where the host's work stands (None: starting)
    return view
