"""Endpoints and their deployments: what runs where, who may score it, and how traffic is split.

The service owns the records and the rules; a FunctionHost (AWS Lambda or local scoring hosts) makes
a deployment run. Changes to one endpoint are serialised by a lease on its item, because on AWS all
deployments of an endpoint are versions of one Lambda function.
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
    DeploymentConfig, DeploymentEnvironment, DeploymentSpec, EndpointTarget, FunctionHost, HostState, ScoreResult, SourceFile,
)
from chalicelib.services import keys
from chalicelib.services.common import Context, check_name
from chalicelib.services.environments import Environments
from chalicelib.services.identity import Principal
from chalicelib.services.registry import Registry, model_files_of
from chalicelib.services.snapshots import Snapshots
from chalicelib.services.telemetry import Telemetry
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.secrets import Secrets
from chalicelib.store.table import (
    ConditionFailed, Delete, Put, Query, Update, all_of, any_of, attr_absent, attr_eq, attr_lt, item_absent,
    item_exists,
)

NAME = re.compile(r"[a-z][a-z0-9-]{1,31}")
NAME_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter"
KEY_NAMES = ("primary", "secondary")
LEASE_SECONDS = 900  # longest a deploy may hold its endpoint; a crashed holder's lease lapses after it
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

    # --- deploy --------------------------------------------------------------------------------
    def deploy(self, principal: Principal, workspace: str, endpoint: str, name: str, models: list[str],
               snapshot_id: str, entry_script: str, environment: str | None, config: DeploymentConfig) -> dict:
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
        with self._lease(workspace, endpoint, create=True, principal=principal):
            previous = self.ctx.table.get_item(keys.deployment(workspace, endpoint, name))
            revision = (previous or {}).get("revision", 0) + 1
            spec = dataclasses.replace(spec, revision=revision)
            item = self._record(principal, workspace, endpoint, name, sorted(versions), snapshot_id, entry_script,
                                scoring_environment and scoring_environment.ref, config, revision, previous)
            self._write_deployment(workspace, endpoint, item, previous, versions, environment_item)
            try:
                state = host.deploy(spec, (previous or {}).get("host"))
            except Exception as error:  # noqa: BLE001 - the deployment records why, the caller is told
                state = HostState("Failed", f"{type(error).__name__}: {error}", (previous or {}).get("host") or {})
            item = self._settle(workspace, endpoint, name, revision, state)
            if item["state"] == "Healthy":  # a new version to route to (a failed one keeps the old routes)
                self._route(workspace, endpoint)
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

    def _record(self, principal, workspace, endpoint, name, models, snapshot_id, entry_script, environment, config,
                revision, previous) -> dict:
        key = keys.deployment(workspace, endpoint, name)
        now = self.ctx.now()
        return {"pk": key.pk, "sk": key.sk, "entity": "deployment", "workspace": workspace, "endpoint": endpoint,
                "name": name, "models": models, "snapshot_id": snapshot_id, "entry_script": entry_script,
                "environment": environment, "config": config_dict(config), "revision": revision,
                "state": "Transitioning", "error": None, "host": (previous or {}).get("host") or {},
                "created": (previous or {}).get("created", now), "created_by": (previous or {}).get("created_by",
                                                                                                      principal.user),
                "updated": now, "updated_by": principal.user}

    def _write_deployment(self, workspace: str, endpoint: str, item: dict, previous: dict | None,
                          versions: dict[str, dict], environment: dict | None) -> None:
        """The deployment, its endpoint's traffic entry, the model versions' usage (from the versions as
        read) and its environment version marked used (so its definition can no longer change), in one
        transaction."""
        usage_key = f"{endpoint}/{item['name']}"
        before = set((previous or {}).get("models", []))
        after = set(versions)
        operations = [Put(item, item_absent() if previous is None else attr_eq("revision", previous["revision"]))]
        # The endpoint's first deployment takes all its traffic; later ones start at 0. (The lease keeps
        # other changes of the endpoint out meanwhile.)
        first = not self._endpoint_item(workspace, endpoint).get("traffic")
        operations.append(Update(keys.endpoint(workspace, endpoint),
                                 set_if_absent={("traffic", item["name"]): 100 if first else 0},
                                 condition=item_exists()))
        for ref in sorted(after - before):
            model, version = ref.rsplit(":", 1)
            operations += self.registry.use_operations(workspace, model, int(version), usage_key, item=versions[ref])
        for ref in sorted(before - after):
            model, version = ref.rsplit(":", 1)
            operations += self.registry.release_operations(workspace, model, int(version), usage_key)
        environment_at = len(operations)
        if environment is not None:
            operations += Environments(self.ctx).use_operations(workspace, environment)
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

    def _settle(self, workspace: str, endpoint: str, name: str, revision: int, state: HostState) -> dict:
        """Record what the host answered, unless a newer revision was written meanwhile."""
        try:
            return self.ctx.table.update(Update(
                keys.deployment(workspace, endpoint, name),
                set={"state": state.state, "error": state.error, "host": state.details, "updated": self.ctx.now()},
                condition=attr_eq("revision", revision)))
        except ConditionFailed:
            return self._deployment_item(workspace, endpoint, name)

    def record_state(self, workspace: str, endpoint: str, name: str, revision: int, state: str,
                     error: str | None) -> None:
        """A host's own report (a local host that keeps crashing, or came back); stale revisions are ignored."""
        try:
            self.ctx.table.update(Update(keys.deployment(workspace, endpoint, name),
                                         set={"state": state, "error": error, "updated": self.ctx.now()},
                                         condition=attr_eq("revision", revision)))
        except ConditionFailed:
            pass

    # --- endpoints -----------------------------------------------------------------------------
    def _create_endpoint(self, principal: Principal, workspace: str, endpoint: str) -> None:
        Workspaces(self.ctx).record(workspace)
        pair = {name: new_key() for name in KEY_NAMES}
        self.secrets.put(self._secret_name(workspace, endpoint), json.dumps(pair))
        key = keys.endpoint(workspace, endpoint)
        item = {"pk": key.pk, "sk": key.sk, "entity": "endpoint", "workspace": workspace, "name": endpoint,
                "traffic": {}, "key_hashes": {n: key_digest(v) for n, v in pair.items()},
                "created": self.ctx.now(), "created_by": principal.user}
        try:
            self.ctx.table.put(item, item_absent())
        except ConditionFailed:
            return  # created concurrently: its keys stand (ours were overwritten in the secret store first)
        self._host().endpoint_keys_changed(workspace, endpoint, list(item["key_hashes"].values()))

    def get_endpoint(self, workspace: str, endpoint: str) -> dict:
        item = self._endpoint_item(workspace, endpoint)
        return self._endpoint_view(item, self._deployment_items(workspace, endpoint))

    def list_endpoints(self, workspace: str) -> dict:
        Workspaces(self.ctx).record(workspace)
        items = list(self.ctx.table.query_all(Query(keys.workspace_pk(workspace), sk_prefix="ENDPOINT#")))
        deployments = list(self.ctx.table.query_all(Query(keys.workspace_pk(workspace), sk_prefix="DEPLOY#")))
        return {"endpoints": [self._endpoint_view(item, [d for d in deployments if d["endpoint"] == item["name"]])
                              for item in items]}

    def set_traffic(self, workspace: str, endpoint: str, traffic: dict) -> dict:
        with self._lease(workspace, endpoint):
            deployments = {d["name"]: d for d in self._deployment_items(workspace, endpoint)}
            check_traffic(traffic, deployments)
            self.ctx.table.update(Update(keys.endpoint(workspace, endpoint),
                                         set={"traffic": {n: traffic.get(n, 0) for n in deployments}},
                                         condition=item_exists()))
            self._route(workspace, endpoint)
        return self.get_endpoint(workspace, endpoint)

    def _route(self, workspace: str, endpoint: str) -> None:
        item = self._endpoint_item(workspace, endpoint)
        details = {d["name"]: d.get("host") or {} for d in self._deployment_items(workspace, endpoint)}
        self._host().set_traffic(workspace, endpoint, dict(item["traffic"]), details)

    def delete_endpoint(self, workspace: str, endpoint: str) -> dict:
        with self._lease(workspace, endpoint):
            removed = [self._remove_deployment(workspace, endpoint, d)
                       for d in self._deployment_items(workspace, endpoint)]
            self._host().remove_endpoint(workspace, endpoint)
            Telemetry(self.ctx).delete_endpoint(workspace, endpoint)
            self.secrets.delete(self._secret_name(workspace, endpoint))
            key = keys.endpoint(workspace, endpoint)
            self.ctx.table.delete(key.pk, key.sk)
        return {"endpoint": endpoint, "deleted": True, "deployments": removed}

    # --- deployments ---------------------------------------------------------------------------
    def get_deployment(self, workspace: str, endpoint: str, name: str) -> dict:
        return deployment_view(self._deployment_item(workspace, endpoint, name))

    def delete_deployment(self, workspace: str, endpoint: str, name: str) -> dict:
        with self._lease(workspace, endpoint):
            item = self._deployment_item(workspace, endpoint, name)
            traffic = self._endpoint_item(workspace, endpoint)["traffic"]
            others = [n for n in traffic if n != name]
            if traffic.get(name, 0) > 0 and others:
                raise Conflict(f"deployment {name!r} still takes {traffic[name]}% of endpoint {endpoint!r}'s "
                               f"traffic; move it to {', '.join(sorted(others))} first", field="deployment")
            self._remove_deployment(workspace, endpoint, item)
            self._route(workspace, endpoint)
        return {"endpoint": endpoint, "deployment": name, "deleted": True}

    def _remove_deployment(self, workspace: str, endpoint: str, item: dict) -> str:
        self._host().remove(workspace, endpoint, item["name"], item.get("host") or {})
        usage_key = f"{endpoint}/{item['name']}"
        operations = [Delete(keys.deployment(workspace, endpoint, item["name"])),
                      Update(keys.endpoint(workspace, endpoint), remove=[("traffic", item["name"])])]
        for ref in item.get("models", []):
            model, version = ref.rsplit(":", 1)
            operations += self.registry.release_operations(workspace, model, int(version), usage_key)
        self.ctx.table.transact(operations)
        return item["name"]

    def logs(self, workspace: str, endpoint: str, name: str, tail: int) -> dict:
        item = self._deployment_item(workspace, endpoint, name)
        return {"logs": self._host().logs(workspace, endpoint, name, item.get("host") or {}, tail)}

    # --- keys ----------------------------------------------------------------------------------
    def get_keys(self, workspace: str, endpoint: str) -> dict:
        self._endpoint_item(workspace, endpoint)
        pair = json.loads(self.secrets.get(self._secret_name(workspace, endpoint)))
        return {f"{name}_key": pair[name] for name in KEY_NAMES}

    def regenerate_key(self, workspace: str, endpoint: str, which: str) -> dict:
        if which not in KEY_NAMES:
            raise Invalid("key must be 'primary' or 'secondary'", field="key")
        with self._lease(workspace, endpoint):
            pair = json.loads(self.secrets.get(self._secret_name(workspace, endpoint)))
            pair[which] = new_key()
            self.secrets.put(self._secret_name(workspace, endpoint), json.dumps(pair))
            item = self.ctx.table.update(Update(keys.endpoint(workspace, endpoint),
                                                set={("key_hashes", which): key_digest(pair[which])},
                                                condition=item_exists()))
            self._host().endpoint_keys_changed(workspace, endpoint, list(item["key_hashes"].values()))
        return {f"{name}_key": pair[name] for name in KEY_NAMES}

    # --- scoring -------------------------------------------------------------------------------
    def score(self, workspace: str, endpoint: str, authorization: str | None, body: bytes,
              content_type: str) -> ScoreResult:
        item = self.ctx.table.get_item(keys.endpoint(workspace, endpoint))
        scheme, _, presented = (authorization or "").partition(" ")
        valid = item is not None and scheme.lower() == "bearer" and presented and any(
            hmac.compare_digest(key_digest(presented.strip()), digest) for digest in item["key_hashes"].values())
        if not valid:
            # The same answer for an unknown endpoint and a wrong key: keys are per endpoint.
            raise Unauthorized("a valid endpoint key is required: Authorization: Bearer <key>")
        deployments = {d["name"]: d for d in self._deployment_items(workspace, endpoint)}
        live = {n: w for n, w in item["traffic"].items() if w > 0 and n in deployments}
        if not live:
            raise Unavailable(f"endpoint {endpoint!r} has no deployment taking traffic")
        target = EndpointTarget(workspace, endpoint, live, {n: deployments[n].get("host") or {} for n in live})
        return self._host().invoke(target, body, content_type)

    # --- helpers -------------------------------------------------------------------------------
    class _Lease:
        def __init__(self, service: "Deployments", workspace: str, endpoint: str, create: bool, principal):
            self.service, self.workspace, self.endpoint = service, workspace, endpoint
            self.create, self.principal = create, principal
            self.token = secrets_module.token_hex(8)

        def __enter__(self):
            service, now = self.service, self.service.ctx.clock()
            key = keys.endpoint(self.workspace, self.endpoint)
            for attempt in range(2):
                try:
                    service.ctx.table.update(Update(
                        key, set={"lease": {"token": self.token, "until": now + LEASE_SECONDS}},
                        condition=all_of(item_exists(), _lease_free(now))))
                    return self
                except ConditionFailed:
                    if service.ctx.table.get_item(key) is not None:
                        raise Conflict(f"endpoint {self.endpoint!r} is being changed by another request; "
                                       "try again when it is done", field="endpoint") from None
                    if not self.create or attempt:
                        raise NotFound(f"endpoint {self.endpoint!r} not found", field="endpoint") from None
                    service._create_endpoint(self.principal, self.workspace, self.endpoint)
            raise AssertionError("unreachable")

        def __exit__(self, *exc):
            try:
                self.service.ctx.table.update(Update(keys.endpoint(self.workspace, self.endpoint),
                                                     remove=["lease"], condition=attr_eq(("lease", "token"), self.token)))
            except ConditionFailed:
                pass  # the endpoint was deleted (by this very request), or the lease lapsed and moved on
            return False

    def _lease(self, workspace: str, endpoint: str, create: bool = False, principal=None) -> "_Lease":
        return Deployments._Lease(self, workspace, endpoint, create, principal)

    def _host(self) -> FunctionHost:
        if self.host is None:
            raise Unavailable("no scoring host is configured for this deployment of Nimbus")
        return self.host

    def _endpoint_item(self, workspace: str, endpoint: str) -> dict:
        item = self.ctx.table.get_item(keys.endpoint(workspace, endpoint))
        if item is None:
            raise NotFound(f"endpoint {endpoint!r} not found in workspace {workspace!r}", field="endpoint")
        return item

    def _deployment_item(self, workspace: str, endpoint: str, name: str) -> dict:
        item = self.ctx.table.get_item(keys.deployment(workspace, endpoint, name))
        if item is None:
            raise NotFound(f"deployment {name!r} not found in endpoint {endpoint!r}", field="deployment")
        return item

    def _deployment_items(self, workspace: str, endpoint: str) -> list[dict]:
        return list(self.ctx.table.query_all(Query(keys.workspace_pk(workspace),
                                                   sk_prefix=keys.deployment_prefix(endpoint))))

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


def _lease_free(now: float):
    return any_of(attr_absent("lease"), attr_lt(("lease", "until"), now))


def check_traffic(traffic: dict, deployments: dict[str, dict]) -> None:
    if not isinstance(traffic, dict) or not traffic:
        raise Invalid("traffic must map deployment names to weights", field="traffic")
    for name, weight in traffic.items():
        if name not in deployments:
            raise Invalid(f"traffic names deployment {name!r}, which this endpoint does not have",
                          field=f"traffic.{name}")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise Invalid(f"traffic.{name} must be an integer from 0 to 100", field=f"traffic.{name}")
        if weight > 0 and deployments[name].get("state") != "Healthy":
            raise Conflict(f"deployment {name!r} is {deployments[name].get('state')}; only a Healthy deployment "
                           "can take traffic", field=f"traffic.{name}")
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
    return view
