"""What the routes answer: one pydantic model per JSON shape, named on each api_route as `response=`.

These models describe, they do not build: the services return plain dicts, and the OpenAPI document
(api/openapi.py) is made from these models, so a field a service adds or drops must be added or dropped
here too. `tests/server/api` checks every successful answer of its calls against the document, and the
fuzz test (tests/fuzz) checks what generated requests get back.

Every model refuses unknown fields (`additionalProperties: false`), so an answer with a field the
document does not name fails those checks. A field that is always present but may be empty is required
and nullable (`str | None`); a field present only sometimes is `absent()`. Free-form values the caller
sent (a run's config, an error's details) stay `dict[str, Any]`. Timestamps are ISO 8601 strings;
non-finite numbers travel as "NaN", "Infinity" or "-Infinity" (chalicelib/json_codec.py).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Timestamp = str  # ISO 8601, UTC
Role = Literal["reader", "contributor", "owner"]
Number = float | Literal["NaN", "Infinity", "-Infinity"]  # how the JSON codec writes a float


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


def absent(description: str = "", alias: str | None = None):
    """A field left out of the answer when it has no value (so neither required nor nullable)."""
    def drop_default(schema: dict) -> None:
        schema.pop("default", None)
    return Field(default=None, description=description or None, json_schema_extra=drop_default, alias=alias)


class Paged(Answer):
    next_page_token: str | None = Field(description="pass as page_token for the next page; null on the last one")


# --- errors -------------------------------------------------------------------------------------
class ErrorBody(Answer):
    """Every refusal and failure (chalicelib/errors.py `to_dict`); `code` is from nimbus/error_codes.py."""

    code: str
    message: str
    field: str | None = absent("the input at fault, e.g. `name`, `metrics[0].values`, `Content-Type`")
    details: dict[str, Any] | None = absent("more about the error, e.g. the deployments using a model version")


# --- users and tokens ---------------------------------------------------------------------------
class Caller(Answer):
    user: str
    is_admin: bool
    token_id: str
    run_id: str | None = Field(description="set for a run token")
    workspace: str | None = Field(description="a scoped token's (or a run token's) one workspace")
    role: Role | None = Field(description="a scoped token's ceiling there")


class User(Answer):
    name: str
    is_admin: bool
    created: Timestamp


class UserList(Answer):
    users: list[User]


class Token(Answer):
    """A token as listed: never its secret."""

    token_id: str
    user: str
    name: str
    created: Timestamp
    expires: Timestamp | None = Field(description="null: it never expires")
    workspace: str | None = Field(description="null: every workspace its user is a member of")
    role: Role | None = Field(description="the highest role it acts with in `workspace`")
    last_used: Timestamp | None = Field(description="to the hour: refreshed at most hourly")


class NewToken(Token):
    token: str = Field(description="the secret, shown this once")


class TokenList(Answer):
    tokens: list[Token]


class TokenRevoked(Answer):
    revoked: str


# --- workspaces ---------------------------------------------------------------------------------


class Workspace(Answer):
    name: str
    description: str
    created: Timestamp
    created_by: str
    role: Role = Field(description="the caller's role")


class Membership(Answer):
    name: str
    role: Role


class WorkspaceList(Answer):
    workspaces: list[Membership]


class WorkspaceDeleted(Answer):
    name: str
    deleted: bool
    runs: int
    blobs: int
    compute_targets: int


class Member(Answer):
    user: str
    role: Role
    added: Timestamp
    added_by: str


class MemberList(Answer):
    members: list[Member]


class MemberRemoved(Answer):
    removed: str


# --- experiments and runs -----------------------------------------------------------------------
class Experiment(Answer):
    name: str
    created: Timestamp
    created_by: str | None
    run_count: int
    last_run: Timestamp | None


class ExperimentPage(Paged):
    experiments: list[Experiment]


class RunSummary(Answer):
    """A run in a listing (services/run_views.py `run_summary`)."""

    id: str
    experiment: str
    display_name: str
    status: str
    created: Timestamp
    started: Timestamp | None
    ended: Timestamp | None
    duration_s: Number | None
    submitted_by: str
    parent_id: str | None
    tags: dict[str, str]
    metrics: dict[str, Any] = Field(description="the latest value of each scalar metric")


class Run(RunSummary):
    """A run on its own (services/run_views.py `run_view`)."""

    properties: dict[str, str]
    error: dict[str, Any] | None
    root_id: str
    depth: int
    metric_types: dict[str, str]
    snapshot_id: str | None
    run_config: dict[str, Any] | None
    git: dict[str, Any] | None
    ci: dict[str, Any] | None
    compute_target: str | None
    job: dict[str, Any] | None = Field(description="the compute job that runs it (type, ids)")
    attempt: int | None
    runner_id: str | None
    attempts: list[dict[str, Any]] = Field(description="each attempt of its runner: attempt, runner_id, started, …")
    children: dict[str, int] = Field(description="how many child runs are in each status")


class RunPage(Paged):
    runs: list[RunSummary]


class RunSearchPage(RunPage):
    total: int = Field(description="how many runs match, over all pages")


class Heartbeat(Answer):
    id: str
    status: str
    heartbeat: Timestamp


class ClaimedRun(Answer):
    run: Run
    run_token: str


# --- what a run records ---------------------------------------------------------------------------
class MetricsLogged(Answer):
    run_id: str
    batch_id: str | None
    points: int
    metrics: int


class MetricLatest(Answer):
    type: str
    latest: Any


class MetricList(Answer):
    metrics: dict[str, MetricLatest]


class MetricHistory(Paged):
    name: str
    type: str
    values: list[Any]
    steps: list[int | None] = Field(description="null for points logged without a step")
    timestamps: list[Number]
    ranks: list[int | None]


class LogStream(Answer):
    stream: str
    size: int
    created: Timestamp


class LogStreamList(Answer):
    streams: list[LogStream]


class LogAppended(Answer):
    stream: str
    offset: int
    next_offset: int


class LogText(Answer):
    stream: str
    offset: int
    text: str
    next_offset: int
    run_status: str
    run_ended: bool


class PathUrl(Answer):
    path: str
    url: str


class PathUrlList(Answer):
    uploads: list[PathUrl]


class OutputFile(Answer):
    path: str
    size: int
    modified: Number = Field(description="seconds since the epoch")


class OutputPage(Paged):
    files: list[OutputFile]


class OutputDownload(PathUrl):
    size: int


# --- snapshots ----------------------------------------------------------------------------------
class DigestUrl(Answer):
    digest: str
    url: str


class SnapshotUploads(Answer):
    uploads: list[DigestUrl] = Field(description="only the contents the store lacks")


class SnapshotFile(Answer):
    path: str
    digest: str
    size: int
    executable: bool


class SnapshotSummary(Answer):
    id: str
    file_count: int
    total_bytes: int
    created: Timestamp


class Snapshot(SnapshotSummary):
    files: list[SnapshotFile]


class SnapshotFileUrl(SnapshotFile):
    url: str


class SnapshotDownloads(Answer):
    files: list[SnapshotFileUrl]


# --- the model registry -------------------------------------------------------------------------
class ModelFile(Answer):
    path: str
    size: int


class ModelFileUrl(ModelFile):
    url: str


class ModelUploads(Answer):
    upload_id: str
    files: list[PathUrl]


class ModelVersion(Answer):
    name: str
    version: int
    id: str = Field(description="name:version")
    asset_path: str
    files: list[ModelFile]
    total_bytes: int
    description: str
    framework: str | None
    framework_version: str | None
    tags: dict[str, str]
    properties: dict[str, str]
    aliases: list[str]
    lineage: dict[str, Any] = Field(description="for a version registered from a run: run_id, experiment, …")
    deployments: list[str]
    created: Timestamp
    created_by: str


class ModelVersionPage(Paged):
    versions: list[ModelVersion]


class ModelPage(Paged):
    models: list[ModelVersion]


class Model(Answer):
    name: str
    latest_version: int
    aliases: dict[str, int]
    created: Timestamp


class ModelFiles(Answer):
    files: list[ModelFileUrl]


class ModelVersionDeleted(Answer):
    deleted: str = Field(description="name:version")


class AliasMove(Answer):
    alias: str
    from_: int | None = Field(alias="from")
    to: int | None
    by: str
    at: Timestamp


class AliasList(Answer):
    aliases: dict[str, int]
    history: list[AliasMove]


class AliasSet(Answer):
    alias: str
    version: int | None
    previous: int | None


class AliasDeleted(Answer):
    alias: str
    previous: int | None


# --- endpoints and deployments --------------------------------------------------------------------
class DeploymentHost(Answer):
    host_url: str | None = absent()
    function_name: str | None = absent()
    function_version: str | None = absent()
    port: int | None = absent()


class Deployment(Answer):
    name: str
    endpoint: str
    models: list[str]
    snapshot_id: str
    entry_script: str
    environment: str | None
    config: dict[str, Any]
    revision: int
    state: str
    error: dict[str, Any] | str | None
    created: Timestamp
    created_by: str
    updated: Timestamp
    updated_by: str
    host: DeploymentHost
    step: str | None = absent("while Creating or Updating: where the host's work stands (null: starting)")


class Endpoint(Answer):
    name: str
    workspace: str
    scoring_uri: str
    traffic: dict[str, int]
    created: Timestamp
    created_by: str
    deployments: list[Deployment]


class EndpointList(Answer):
    endpoints: list[Endpoint]


class EndpointDeleted(Answer):
    endpoint: str
    deleted: bool
    deployments: list[str]


class DeploymentDeleted(Answer):
    endpoint: str
    deployment: str
    deleted: bool


class DeploymentLogs(Answer):
    logs: str


class EndpointKeys(Answer):
    primary_key: str
    secondary_key: str


class TelemetryCounts(Answer):
    requests: int
    errors: int
    p50_ms: Number | None
    p95_ms: Number | None


class Telemetry(TelemetryCounts):
    window_minutes: int
    deployments: dict[str, TelemetryCounts]


# --- environments -------------------------------------------------------------------------------
class EnvironmentDefinitionView(Answer):
    python: str
    pip: list[str]
    variables: dict[str, str]
    base_image: str


class ImageBuild(Answer):
    kind: str
    state: str
    image_uri: str | None
    build_id: str | None
    log_key: str | None
    error: Any
    started: Timestamp | None
    finished: Timestamp | None


class EnvironmentVersion(Answer):
    name: str
    version: int
    id: str = Field(description="name:version")
    definition: EnvironmentDefinitionView
    hash: str
    used: bool = Field(description="a run has named it: its definition can no longer change")
    created: Timestamp
    created_by: str
    updated: Timestamp | None = absent()
    builds: list[ImageBuild] | None = absent("on GET of one version: this workspace's image builds of it")


class EnvironmentList(Answer):
    environments: list[EnvironmentVersion]


# --- compute targets ----------------------------------------------------------------------------
class ComputeTarget(Answer):
    name: str
    type: str
    settings: dict[str, Any]
    state: str
    created: Timestamp | None
    created_by: str | None
    resources: dict[str, Any] | None = absent("the AWS Batch resources of a batch target")
    error: dict[str, Any] | None = absent()
    step: str | None = absent("while Creating: where the creation stands")
    cleanup: bool | None = absent("the Batch resources Nimbus made are being taken down")


class ComputeTargetShown(ComputeTarget):
    active_runs: int


class ComputeTargetList(Answer):
    computes: list[ComputeTarget]


class ComputeTargetDeleted(Answer):
    name: str
    deleted: bool
    state: Literal["Deleting"] | None = absent("on 202: Batch is still taking the cluster down")


# --- operators ----------------------------------------------------------------------------------
class Stats(Answer):
    backend: str
    table_writes: int


ScoringAnswer = Any  # whatever the entry script's run() returned, as JSON


# --- workspace secrets: names and dates; a value only to a run ----------------------------------
class SecretInfo(Answer):
    name: str
    created: Timestamp
    created_by: str
    updated: Timestamp
    updated_by: str
    version: int = Field(description="how many times it was set")


class SecretList(Answer):
    secrets: list[SecretInfo]


class SecretDeleted(Answer):
    name: str
    deleted: bool


class SecretValue(Answer):
    name: str
    value: str


# --- datastores ---------------------------------------------------------------------------------
class Datastore(Answer):
    name: str
    type: str = Field(description="blob (the workspace's built-in one), s3 or local")
    description: str
    settings: dict[str, Any] = Field(description="s3: bucket, prefix, region, endpoint_url; local: root, path")
    credential: str = Field(description="which kind is set, never its value: access_key, role, platform or none")
    credential_secrets: dict[str, str] | None = absent("the names of the workspace secrets holding the keys")
    is_default: bool
    created: Timestamp | None
    created_by: str | None
    updated: Timestamp | None


class DatastoreList(Answer):
    datastores: list[Datastore]


class DatastoreDeleted(Answer):
    name: str
    deleted: bool


class DatastoreUpload(Answer):
    path: str
    size: int
    url: str | None = absent("one presigned PUT of the whole file")
    upload_id: str | None = absent("a multipart upload: ask for its parts' URLs, then complete it")
    part_size: int | None = absent("bytes in every part but the last")
    part_count: int | None = absent("how many parts")


class DatastoreUploads(Answer):
    uploads: list[DatastoreUpload]
    skipped: list[str] = Field(description="files the datastore holds already (overwrite was false)")


class PartUrl(Answer):
    part_number: int
    url: str


class PartUrlList(Answer):
    parts: list[PartUrl]


class UploadCompleted(Answer):
    path: str
    size: int | None


class UploadAborted(Answer):
    path: str
    aborted: bool


class DatastoreDownloads(Answer):
    downloads: list[OutputDownload]


# --- datasets -----------------------------------------------------------------------------------
class DatasetSource(Answer):
    datastore: str
    path: str


class DatasetColumn(Answer):
    name: str
    type: str


class DatasetPreview(Answer):
    columns: list[str]
    rows: list[list[Any]]


class ColumnProfile(Answer):
    name: str
    type: str
    missing: int = Field(description="nulls, and NaN in floating-point columns")
    distinct: int = Field(description="distinct values that are not null")
    min: Any = absent("ordered types: numbers, text, times, booleans")
    max: Any = absent("ordered types")
    mean: Number | None = absent("numbers")


class DatasetVersion(Answer):
    name: str
    version: int
    type: str = Field(description="file or tabular")
    paths: list[DatasetSource]
    format: str | None = Field(description="tabular: delimited, parquet or json_lines")
    options: dict[str, Any]
    fingerprint: str = Field(description="sha256 of the listing: each file's datastore, path, size and store tag")
    file_count: int
    total_bytes: int
    row_count: int | None
    description: str
    tags: dict[str, str]
    created: Timestamp
    created_by: str
    written_by_run: str | None = Field(description="the run whose output this version is (its lineage upward)")
    # `schema` would shadow a pydantic method: the field is named so in JSON only.
    schema_: list[DatasetColumn] | None = absent("tabular, in one version's answer: the columns", alias="schema")
    preview: DatasetPreview | None = absent("tabular: the first rows")
    profile: list[ColumnProfile] | None = absent("tabular: one entry per column")
    existing: bool | None = absent("on registering: true when this definition over the same data was a version already")


class DatasetVersionList(Answer):
    versions: list[DatasetVersion]


class DatasetList(Answer):
    datasets: list[DatasetVersion] = Field(description="each dataset's latest version")


class DatasetFile(Answer):
    datastore: str
    path: str
    size: int


class DatasetFilePage(Paged):
    files: list[DatasetFile]


class DatasetDownload(Answer):
    datastore: str
    path: str
    size: int
    url: str


class DatasetDownloads(Answer):
    downloads: list[DatasetDownload]


class DatasetVerification(Answer):
    name: str
    version: int
    matches: bool
    fingerprint: str
    current_fingerprint: str | None = Field(description="null: the paths match no file now")
    changed: list[DatasetSource] = Field(description="the first 100 of each list")
    added: list[DatasetSource]
    removed: list[DatasetSource]
    counts: dict[str, int]


class DatasetUse(Answer):
    run_id: str
    input: str = Field(description="the input's name in the run")
    at: Timestamp = Field(description="when the run was submitted")


class DatasetRuns(Answer):
    runs: list[DatasetUse]


class RunDatasetVersion(Answer):
    name: str
    version: int
    fingerprint: str
    input: str | None = absent("an input: its name in the run")
    mode: str | None = absent("an input: download, mount or direct")


class RunDatasets(Answer):
    run_id: str
    inputs: list[RunDatasetVersion] = Field(description="the versions it read, pinned when it was submitted")
    outputs: list[RunDatasetVersion] = Field(description="the versions it registered with its token")


class DatasetVersionDeleted(Answer):
    name: str
    version: int
    deleted: bool


# --- the audit log ------------------------------------------------------------------------------
class AuditEntry(Answer):
    id: str = Field(description="sorts in time order")
    at: Timestamp
    actor: str | None = Field(description="null: the platform itself")
    actor_token_id: str | None
    actor_run_id: str | None = Field(description="set when a run's token made the change")
    action: str
    target: str
    details: dict[str, Any]


class AuditLog(Paged):
    entries: list[AuditEntry] = Field(description="newest first")
