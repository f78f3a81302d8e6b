"""Deployments and endpoints in the style of Azure ML v1: deploy and Webservice (their configuration:
nimbus/deployment_config.py, InferenceConfig and DeploymentConfig).

An endpoint (a Webservice) holds two keys and a traffic split over its deployments; a deployment is one
scoring function built from registered model versions, a snapshot of a source folder and an entry script.
A deployment takes a while to roll out (Creating, or Updating, then Succeeded or Failed): `deploy` waits
for it unless told not to, and `Webservice.wait_for_deployment` waits later.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from nimbus import snapshot
from nimbus.client import api_path
from nimbus.deployment_config import DeploymentConfig, InferenceConfig, check_name, invalid, whole_number
from nimbus.exceptions import AuthenticationError, NimbusError, WebserviceScoringError
from nimbus.progress import ProgressBar, wanted

if TYPE_CHECKING:
    from nimbus.workspace import Workspace

KEY_NAMES = ("primary", "secondary")
ROLLING_OUT = ("Creating", "Updating")  # a deployment's states while it is on its way
DEPLOY_TIMEOUT_S = 25 * 60.0  # the service itself fails a deployment still on its way after 20 minutes
POLL_SECONDS = 2.0


class WebserviceDeploymentError(NimbusError):
    """A deployment ended Failed; `details["deployment"]` holds the service's view of it."""

    code = "DeploymentFailed"


class WebserviceTimeout(NimbusError, TimeoutError):
    """A deployment was still rolling out when the wait ended; it goes on without the caller."""

    code = "Timeout"


def model_ids(models: Iterable[Any]) -> list[str]:
    """["name:version"] from Model objects (with .name and .version) or "name:version" strings."""
    if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):
        raise invalid("models", "must be a list of models or 'name:version' strings")
    ids = []
    for index, model in enumerate(models):
        if isinstance(model, str):
            name, sep, version = model.partition(":")
        else:
            name, version, sep = getattr(model, "name", None), getattr(model, "version", None), ":"
            name, version = (None, None) if name is None or version is None else (str(name), str(version))
        if not sep or not name or not version:
            raise invalid(f"models[{index}]", f"must be a Model or a 'name:version' string, not {model!r}")
        ids.append(f"{name}:{version}")
    if not ids:
        raise invalid("models", "must name at least one model version")
    return ids


# --- deploying --------------------------------------------------------------------------------------
def deploy(workspace: "Workspace", name: str, models: Iterable[Any], inference_config: InferenceConfig,
           deployment_config: DeploymentConfig | None = None, endpoint: str | None = None,
           show_progress: bool | None = True, *, wait: bool = True, timeout_s: float = DEPLOY_TIMEOUT_S,
           poll_seconds: float = POLL_SECONDS) -> "Webservice":
    """Snapshots the source folder and creates (or updates) deployment `name` of `endpoint` (default: `name`).

    Waits until the deployment is Succeeded (`wait=False`: returns while it is still Creating or Updating;
    see Webservice.wait_for_deployment). A Failed deployment raises WebserviceDeploymentError with the
    service's error, a deployment still on its way after `timeout_s` WebserviceTimeout. A new endpoint
    sends all its traffic to its first deployment; later deployments start at weight 0 (see
    Webservice.set_traffic).
    """
    check_name(name, "name")
    endpoint = check_name(endpoint, "endpoint") if endpoint is not None else name
    ids = model_ids(models)
    if not isinstance(inference_config, InferenceConfig):
        raise invalid("inference_config", "must be an InferenceConfig")
    inference_config.validate()
    config = (deployment_config or DeploymentConfig()).to_dict()

    body = {"models": ids, "snapshot_id": _upload_source(workspace, inference_config, show_progress),
            "entry_script": inference_config.entry_script, "environment": inference_config.environment,
            "config": config}
    view = workspace.client.request("PUT", api_path("workspaces", workspace.name, "endpoints", endpoint,
                                                    "deployments", name), json=body)
    service = Webservice(workspace, endpoint)
    service.deployment_details = view
    _raise_if_failed(endpoint, name, view)
    if wait and view.get("state") in ROLLING_OUT:
        service.wait_for_deployment(timeout_s=timeout_s, poll_seconds=poll_seconds)
    return service


def _upload_source(workspace: "Workspace", inference_config: InferenceConfig, show_progress: bool | None) -> str:
    """The source folder as a snapshot (only the content the store lacks is uploaded): its id."""
    files = snapshot.collect(inference_config.source_directory, **snapshot.limits_from_env())
    if inference_config.entry_script not in {f.path for f in files}:
        raise invalid("entry_script", f"{inference_config.entry_script!r} is left out of the snapshot by an "
                                       f"ignore file (.amlignore or .gitignore)")
    content_bytes = sum({f.digest: f.size for f in files}.values())
    with ProgressBar(content_bytes, "snapshot", enabled=wanted(show_progress)) as bar:
        return snapshot.upload(workspace.client, workspace.name, files, bar.update)["id"]


def _raise_if_failed(endpoint: str, name: str, deployment: Mapping) -> None:
    if deployment.get("state") == "Failed":
        error = deployment.get("error") or "no reason given"
        raise WebserviceDeploymentError(f"deployment {name!r} of endpoint {endpoint!r} Failed: "
                                        f"{error}", details={"deployment": dict(deployment)})


# --- endpoints --------------------------------------------------------------------------------------
class Webservice:
    """An endpoint: scoring URI, keys, traffic split, deployments, logs and telemetry.

    Nothing is fetched until needed; properties show the endpoint as last read (get_details() re-reads).
    """

    def __init__(self, workspace: "Workspace", name: str, *, details: dict | None = None):
        self.workspace = workspace
        self.name = name
        self._details: dict | None = dict(details) if details is not None else None
        self._primary_key: str | None = None
        self.deployment_details: dict | None = None  # the deployment deploy() made, as the service answered

    @classmethod
    def list(cls, workspace: "Workspace") -> list["Webservice"]:
        reply = workspace.client.get(api_path("workspaces", workspace.name, "endpoints"))
        return [cls(workspace, item["name"], details=item) for item in reply.get("endpoints") or []]

    # --- what the endpoint is -----------------------------------------------------------------------
    def get_details(self) -> dict:
        """The service's current view of the endpoint, with its deployments."""
        self._details = self.workspace.client.get(self._path())
        return dict(self._details)

    @property
    def details(self) -> dict:
        return dict(self._details) if self._details is not None else self.get_details()

    @property
    def scoring_uri(self) -> str:
        return self.workspace.client.url + self._path("score")

    @property
    def traffic(self) -> dict[str, int]:
        return dict(self.details.get("traffic") or {})

    @property
    def deployments(self) -> list[dict]:
        """Each deployment's view (name, models, state, error, …), in name order."""
        found = self.details.get("deployments") or []
        if isinstance(found, Mapping):  # tolerate {name: view}
            found = [{"name": name, **view} for name, view in found.items()]
        return sorted(found, key=lambda view: view.get("name", ""))

    @property
    def state(self) -> str | None:
        """Failed if any deployment failed, Creating or Updating while any is on its way, else Succeeded
        (None: no deployments)."""
        if self.details.get("state"):
            return self.details["state"]
        states = {view.get("state") for view in self.deployments}
        for state in ("Failed", *ROLLING_OUT):
            if state in states:
                return state
        return "Succeeded" if states else None

    def get_deployment(self, name: str) -> dict:
        return self.workspace.client.get(self._path("deployments", name))

    def wait_for_deployment(self, show_output: bool = False, timeout_s: float = DEPLOY_TIMEOUT_S,
                            poll_seconds: float = POLL_SECONDS, *, sleep: Callable[[float], None] = time.sleep) -> None:
        """Blocks while deployments are Creating or Updating (each look takes their rollout further on the
        service); raises WebserviceDeploymentError if one ended Failed, WebserviceTimeout after `timeout_s`.

        After deploy(), only the deployment it made is waited for.
        """
        mine = (self.deployment_details or {}).get("name")
        deadline, shown = time.monotonic() + timeout_s, {}
        while True:
            views = self._look(mine)
            for view in views if show_output else ():
                if shown.get(view.get("name")) != view.get("state"):  # each state once, as it changes
                    shown[view.get("name")] = view.get("state")
                    print(f"{self.name}/{view.get('name')}: {view.get('state')}")
            rolling = [v.get("name") for v in views if v.get("state") in ROLLING_OUT]
            if not rolling:
                break
            if time.monotonic() >= deadline:
                raise WebserviceTimeout(f"deployment {rolling[0]!r} of endpoint {self.name!r} is still rolling out "
                                        f"after {timeout_s:g} s; see `nimbus endpoint show {self.name}`")
            sleep(poll_seconds)
        for view in views:
            _raise_if_failed(self.name, view.get("name"), view)

    def _look(self, mine: str | None) -> list[dict]:
        """The deployment deploy() made, read again (or every deployment, with the endpoint)."""
        if mine is None:
            self.get_details()
            return self.deployments
        self.deployment_details = self.get_deployment(mine)
        return [self.deployment_details]

    # --- scoring ---------------------------------------------------------------------------------------
    def run(self, input_data: Any) -> Any:
        """Scores input_data and returns the decoded answer.

        str and bytes are sent as they are; anything else is sent as JSON. Failures raise
        WebserviceScoringError (or another NimbusError) with the service's status and message.
        """
        body = _encoded(input_data)
        cached = self._primary_key is not None
        try:
            return self._score(body)
        except AuthenticationError:
            if not cached:
                raise
            self._primary_key = None  # the key was regenerated elsewhere: fetch it once more
            return self._score(body)

    def _score(self, body: bytes) -> Any:
        key = self._primary_key or self.get_keys()[0]
        try:
            return self.workspace.client.request("POST", self._path("score"), data=body, retry=False, token=key)
        except WebserviceScoringError:
            raise
        except NimbusError as err:
            if err.status == 500 or (err.code or "").startswith("Scoring"):
                raise WebserviceScoringError(err.message, status=err.status, code=err.code, field=err.field,
                                             details=err.details) from None
            raise

    def get_keys(self) -> tuple[str, str]:
        """(primary, secondary). The primary key is kept for run()."""
        return self._keys(self.workspace.client.get(self._path("keys")))

    def regen_key(self, key: str) -> tuple[str, str]:
        """Replaces the 'Primary' or 'Secondary' key (any case); returns the new (primary, secondary)."""
        which = key.lower() if isinstance(key, str) else key
        if which not in KEY_NAMES:
            raise invalid("key", f"must be 'Primary' or 'Secondary', not {key!r}")
        return self._keys(self.workspace.client.post(self._path("keys", "regenerate"), {"key": which}))

    def _keys(self, reply: Mapping) -> tuple[str, str]:
        self._primary_key = reply["primary_key"]
        return reply["primary_key"], reply["secondary_key"]

    # --- operating ---------------------------------------------------------------------------------------
    def set_traffic(self, traffic: Mapping[str, int]) -> dict[str, int]:
        """Splits requests between deployments by weight (whole numbers 0-100 summing to 100)."""
        if not isinstance(traffic, Mapping) or not traffic:
            raise invalid("traffic", "must map deployment names to weights")
        for deployment, weight in traffic.items():
            whole_number(weight, f"traffic.{deployment}", 0, 100)
        if sum(traffic.values()) != 100:
            raise invalid("traffic", f"weights must sum to 100, not {sum(traffic.values())}")
        self._details = self.workspace.client.request("PUT", self._path("traffic"), json={"traffic": dict(traffic)})
        return self.traffic

    def get_logs(self, deployment: str | None = None, tail: int = 200) -> str:
        """The last `tail` lines a deployment printed (default: the one receiving the most traffic)."""
        whole_number(tail, "tail", 1)
        if deployment is None:
            deployment = self._busiest_deployment()
        return self.workspace.client.get(self._path("deployments", deployment, "logs"), tail=tail)["logs"]

    def _busiest_deployment(self) -> str:
        traffic, names = self.traffic, [view["name"] for view in self.deployments]
        if not names:
            raise invalid("deployment", f"endpoint {self.name!r} has no deployments")
        return max(names, key=lambda name: (traffic.get(name, 0), name))

    def telemetry(self, minutes: int = 60) -> dict:
        """Requests, errors and p50/p95 latency over the last `minutes`, in all and per deployment."""
        whole_number(minutes, "minutes", 1)
        return self.workspace.client.get(self._path("telemetry"), minutes=minutes)

    def delete_deployment(self, name: str) -> Any:
        """Deletes one deployment (refused while it takes traffic and others exist)."""
        reply = self.workspace.client.request("DELETE", self._path("deployments", name))
        self._details = None
        return reply

    def delete(self) -> Any:
        """Deletes every deployment, then the endpoint and its keys."""
        reply = self.workspace.client.request("DELETE", self._path())
        self._details, self._primary_key = None, None
        return reply

    def _path(self, *more: str) -> str:
        return api_path("workspaces", self.workspace.name, "endpoints", self.name, *more)

    def __repr__(self) -> str:
        return f"Webservice(workspace={self.workspace.name!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Webservice) and (self.workspace, self.name) == (other.workspace, other.name)

    def __hash__(self) -> int:
        return hash((self.workspace, self.name))


def _encoded(input_data: Any) -> bytes:
    if isinstance(input_data, bytes):
        return input_data
    if isinstance(input_data, str):
        return input_data.encode("utf-8")
    try:
        return json.dumps(input_data, allow_nan=False, default=_plain).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise invalid("input_data", f"cannot be sent as JSON: {err}") from None


def _plain(value: Any) -> Any:
    """numpy arrays and scalars, pandas objects: their plain Python form."""
    to_list: Callable | None = getattr(value, "tolist", None)
    if callable(to_list):
        return to_list()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
