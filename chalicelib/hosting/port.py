"""The FunctionHost port: where a deployment's scoring function runs (AWS Lambda, or local scoring hosts).

The deployments service decides *what* runs (a DeploymentSpec, pure data); a host makes it run, routes
scoring requests by the endpoint's traffic weights and tears it down again.

Making a revision run may take longer than a request may last (a Lambda function is Pending, then its
update InProgress, for seconds to minutes), so a host never waits for it: `deploy` takes the rollout as
far as it goes now and hands back where it stands (`HostState.rollout`, plain JSON the service keeps);
`advance` takes it further each time the service looks again (services/deployment_lifecycle.py).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelFiles:
    """One registered model version as a deployment needs it: its files live under `blob_prefix`."""

    name: str
    version: int
    asset_path: str  # what Model.get_model_path(name) points at, relative to the version's folder
    blob_prefix: str  # blob key prefix; file i is at blob_prefix + files[i][0]
    files: tuple[tuple[str, int], ...]  # (relative path, size)


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative path inside the deployment's source folder
    blob_key: str  # where its bytes are (a snapshot content blob)
    size: int


@dataclass(frozen=True)
class DeploymentConfig:
    memory_mb: int = 1024
    timeout_s: int = 60
    reserved_concurrency: int | None = None
    provisioned_concurrency: int | None = None
    # Autoscale bounds. On Lambda: min → provisioned, max → reserved concurrency, unless those are given.
    # A local deployment is one host process whatever they say.
    min_instances: int = 0
    max_instances: int | None = None
    capture_rate: float = 0.0  # share of requests whose body and answer are stored in the blob store


@dataclass(frozen=True)
class DeploymentEnvironment:
    """The environment version a deployment scores in (chalicelib/services/environments.py)."""

    ref: str  # 'name:version', pinned when the deployment was written
    hash: str  # the definition's sha256: names its virtualenv locally, its image on AWS
    definition: dict  # {python, pip, variables, base_image}
    image_uri: str | None = None  # AWS: the environment's built image (the service checks it Succeeded)


@dataclass(frozen=True)
class DeploymentSpec:
    workspace: str
    endpoint: str
    deployment: str
    revision: int  # grows with every update of the deployment
    models: tuple[ModelFiles, ...]
    source: tuple[SourceFile, ...]
    entry_script: str  # a path among `source`
    environment: DeploymentEnvironment | None  # None: the platform's own interpreter and packages
    config: DeploymentConfig
    capture_prefix: str = ""  # blob prefix for captured requests (empty: capture off)


SUCCEEDED, IN_PROGRESS, FAILED = "Succeeded", "InProgress", "Failed"  # HostState.state


@dataclass
class HostState:
    """Where one revision's rollout stands.

    Succeeded: it serves; `details` say where (host-specific and JSON-able: function version, port, url).
    InProgress: not there yet; `rollout` (JSON-able) is what `advance` takes further.
    Failed: `error` says why; `details`, when not empty, replace what the deployment records (e.g. the
    serving revision with the failed attempt's log folder); empty keeps the revision that served before.
    """

    state: str
    error: str | None = None
    details: dict = field(default_factory=dict)
    rollout: dict | None = None


@dataclass(frozen=True)
class EndpointTarget:
    """What a host needs to route one scoring request."""

    workspace: str
    endpoint: str
    traffic: dict[str, int]  # deployment -> weight (0-100, summing to 100)
    details: dict[str, dict]  # deployment -> HostState.details


@dataclass
class ScoreResult:
    status: int
    body: bytes
    deployment: str | None  # which deployment answered (None when none could)
    content_type: str = "application/json"


class FunctionHost(abc.ABC):
    def check(self, spec: DeploymentSpec) -> None:
        """Refuse (Invalid, Conflict) a spec this host cannot deploy, before the deployment is written."""

    @abc.abstractmethod
    def deploy(self, spec: DeploymentSpec, previous: dict | None) -> HostState:
        """Begin making the revision run and take it as far as it goes without waiting; `previous` is the
        details of the revision that serves now (None: none). Never polls for readiness."""

    @abc.abstractmethod
    def advance(self, rollout: dict) -> HostState:
        """The rollout `deploy` (or an earlier `advance`) handed back, one look further, without waiting. A
        host that is busy or throttled answers InProgress with the rollout as it stands."""

    def abandon(self, rollout: dict) -> None:
        """Undo what an unfinished rollout made (it timed out, or its deployment is deleted); idempotent."""

    @abc.abstractmethod
    def set_traffic(self, workspace: str, endpoint: str, traffic: dict[str, int], details: dict[str, dict]) -> None:
        """Route the endpoint's requests by weight. Must not interrupt requests being served."""

    @abc.abstractmethod
    def invoke(self, target: EndpointTarget, body: bytes, content_type: str) -> ScoreResult: ...

    @abc.abstractmethod
    def remove(self, workspace: str, endpoint: str, deployment: str, details: dict) -> None:
        """Stop and delete one deployment's function; idempotent."""

    @abc.abstractmethod
    def remove_endpoint(self, workspace: str, endpoint: str) -> None:
        """Delete whatever the endpoint itself owns (AWS: the function and its alias); idempotent."""

    def endpoint_keys_changed(self, workspace: str, endpoint: str, key_digests: list[str]) -> None:
        """The endpoint's keys changed. Hosts that check keys themselves (local hosts) override this;
        Lambda functions are reached only through the API, which checks the keys."""

    @abc.abstractmethod
    def logs(self, workspace: str, endpoint: str, deployment: str, details: dict, tail: int) -> str:
        """The last `tail` lines the deployment's scoring function printed."""
