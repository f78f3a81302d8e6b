"""Request bodies. Unknown fields are refused so a typo never passes silently."""
from __future__ import annotations

from typing import Annotated, Any, Literal

import re

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from chalicelib.domain.validation import EXPERIMENT_NAME, USER_NAME, WORKSPACE_NAME
from chalicelib.services.compute_settings import TYPES as COMPUTE_TYPES
from chalicelib.services.compute_targets import NAME as COMPUTE_NAME
from chalicelib.services.datasets import NAME as DATASET_NAME
from chalicelib.services.datastores import NAME as DATASTORE_NAME
from chalicelib.services.outputs import IMAGE_EXTENSIONS
from chalicelib.services.workspace_secrets import SECRET_NAME
from nimbus.runtime.run_states import STATUSES

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def checked_as(pattern: re.Pattern) -> dict:
    """For the OpenAPI document: the pattern the service checks the field against (the service, not
    pydantic, refuses a mismatch, with the rule spelled out and the field named)."""
    return {"pattern": f"^(?:{pattern.pattern})$"}


def _whole(value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema, and so the OpenAPI document, says).
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole)]  # an int field that takes 3.0 too, and refuses 3.5


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateUser(Body):
    name: str = Field(max_length=64, json_schema_extra=checked_as(USER_NAME))
    is_admin: bool = False


class CreateToken(Body):
    name: str = Field(default="default", max_length=128)
    expires_in: int | None = None  # seconds; the service says which range (field expires_in)
    workspace: str | None = Field(default=None, max_length=64)  # scope the token to this workspace
    role: Literal["reader", "contributor", "owner"] | None = None  # the highest role it acts with there


class CreateWorkspace(Body):
    name: str = Field(max_length=64, json_schema_extra=checked_as(WORKSPACE_NAME))
    description: str = Field(default="", max_length=5000)


class AddMember(Body):
    user: str = Field(max_length=64, json_schema_extra=checked_as(USER_NAME))
    role: Literal["reader", "contributor", "owner"]


class RunInput(Body):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="`${{inputs.<name>}}` in arguments")
    dataset: str = Field(max_length=255, json_schema_extra=checked_as(DATASET_NAME))
    version: WholeNumber | Literal["latest"] = "latest"
    mode: Literal["download", "mount", "direct"] = "download"


class RunOutput(Body):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="`${{outputs.<name>}}` in arguments")
    datastore: str = Field(max_length=255, json_schema_extra=checked_as(DATASTORE_NAME))
    path: str = Field(min_length=1, max_length=1024, description="where on the datastore; {run-id} is replaced")
    register_as: str | None = Field(default=None, max_length=255, json_schema_extra=checked_as(DATASET_NAME),
                                    description="a file dataset the run's output becomes a new version of")


class RunConfig(Body):
    """What a submitted run executes (the SDK's ScriptRunConfig on the wire)."""

    script: str | None = Field(default=None, min_length=1, max_length=1024)
    command: str | None = Field(default=None, min_length=1, max_length=8192)
    arguments: list[str] = Field(default_factory=list, max_length=1000)
    compute: str = Field(default="local", pattern=r"^[a-z][a-z0-9-]{1,31}$")
    environment: str | None = Field(default=None, max_length=255)
    environment_variables: dict[str, str] = Field(default_factory=dict, max_length=200)
    # Variables whose values come from the workspace's secrets: {"DB_PASSWORD": "db-password"}. The runner
    # reads each with the run's token when the run starts; environment_variables are stored in clear.
    secret_variables: dict[str, str] = Field(default_factory=dict, max_length=50)
    max_run_duration_s: WholeNumber | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    node_count: WholeNumber = Field(default=1, ge=1, le=64)
    process_count_per_node: WholeNumber = Field(default=1, ge=1, le=64)
    resources: "Resources | None" = None
    inputs: list[RunInput] = Field(default_factory=list, max_length=20,
                                   description="dataset versions the runner materialises before the script starts")
    outputs: list[RunOutput] = Field(default_factory=list, max_length=20,
                                     description="folders the runner uploads to datastores when the script succeeds")

    @model_validator(mode="after")
    def one_entry_point(self) -> "RunConfig":
        if (self.script is None) == (self.command is None):
            raise ValueError("give exactly one of script and command")
        for name in self.environment_variables:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"environment variable name {name!r} is invalid")
        for name in self.secret_variables:
            if name in self.environment_variables:
                raise ValueError(f"{name!r} is both in environment_variables and in secret_variables")
        return self

    @field_validator("secret_variables")
    @classmethod
    def secret_names(cls, variables: dict[str, str]) -> dict[str, str]:
        for name, secret in variables.items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"environment variable name {name!r} is invalid")
            if not SECRET_NAME.fullmatch(secret):
                raise ValueError(f"{name}: secret name {secret!r} is invalid (letters, digits and '-')")
        return variables


class Resources(Body):
    """What one node of a run asks its compute target for."""

    vcpus: float | None = Field(default=None, gt=0, le=256)
    memory_mb: WholeNumber | None = Field(default=None, ge=128, le=2_000_000)
    gpus: WholeNumber | None = Field(default=None, ge=0, le=16)


RunConfig.model_rebuild()


class GitInfo(Body):
    remote: str | None = Field(default=None, max_length=2048)
    branch: str | None = Field(default=None, max_length=1024)
    commit: str | None = Field(default=None, max_length=64)
    dirty: bool | None = None


class CreateRun(Body):
    experiment: str | None = Field(default=None, max_length=255, json_schema_extra=checked_as(EXPERIMENT_NAME))
    parent_id: str | None = Field(default=None, max_length=64)
    display_name: str | None = Field(default=None, max_length=255)
    tags: dict[str, str] = Field(default_factory=dict)
    properties: dict[str, str] = Field(default_factory=dict)
    status: Literal["NotStarted", "Queued", "Running"] = "NotStarted"
    snapshot_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    run_config: RunConfig | None = None
    git: GitInfo | None = None
    ci: dict[str, str | None] | None = Field(default=None, max_length=20)
    client_token: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class CreateCompute(Body):
    # settings stay loosely typed: the service checks them and names the field (`settings.max_vcpus`).
    name: str = Field(max_length=64, json_schema_extra=checked_as(COMPUTE_NAME))
    type: str = Field(max_length=32, json_schema_extra={"enum": list(COMPUTE_TYPES)})
    settings: dict[str, Any] = Field(default_factory=dict, max_length=50)


class UpdateTags(Body):
    tags: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list, max_length=200)


class AddProperties(Body):
    properties: dict[str, str]


class ChangeStatus(Body):
    status: str = Field(max_length=32, json_schema_extra={"enum": list(STATUSES)})
    error: dict[str, Any] | None = None


class MetricEntry(BaseModel):
    # Loosely typed on purpose: the metrics service validates each value by the metric's type and
    # names the offending entry (pydantic would check 100,000 points one by one, slowly).
    model_config = ConfigDict(extra="forbid")
    name: Any
    type: Any = "scalar"
    values: list[Any]
    steps: list[Any] | None = None
    timestamps: list[Any] | None = None
    rank: Any = None  # the rank that logged the points, in a distributed run (checked by the service)


class LogMetrics(Body):
    batch_id: str | None = Field(default=None, max_length=40)
    metrics: list[MetricEntry] = Field(min_length=1, max_length=1000)


class SetSecret(Body):
    """A workspace secret's value: at most 64 KiB of UTF-8, checked by the Secrets port."""

    value: str = Field(min_length=1, max_length=65536)


class AccessKeys(Body):
    """An S3 access key pair: kept in the workspace's secret store, never answered back."""

    access_key_id: str = Field(min_length=1, max_length=1024)
    secret_access_key: str = Field(min_length=1, max_length=1024)


class RegisterDatastore(Body):
    # settings stay loosely typed: the service checks them per type and names the field (`settings.bucket`).
    name: str = Field(max_length=255, json_schema_extra=checked_as(DATASTORE_NAME))
    type: Literal["s3", "local"]
    settings: dict[str, Any] = Field(default_factory=dict, max_length=10)
    credentials: AccessKeys | None = None
    description: str = Field(default="", max_length=5000)
    overwrite: bool = False


class DatastoreCredentials(Body):
    """New access keys, or null: the platform's (or the job's) role."""

    credentials: AccessKeys | None = None


class DefaultDatastore(Body):
    name: str = Field(max_length=255, json_schema_extra=checked_as(DATASTORE_NAME))


class FileToUpload(Body):
    path: str = Field(min_length=1, max_length=1024, description="relative to target_path")
    size: int = Field(ge=0, le=5 * 1024 ** 4, description="bytes")


class UploadToDatastore(Body):
    files: list[FileToUpload] = Field(min_length=1, max_length=500)
    target_path: str = Field(default="", max_length=1024, description="the folder on the datastore ('' its root)")
    overwrite: bool = Field(default=False, description="false: a file the datastore holds is skipped")


class MultipartUpload(Body):
    path: str = Field(min_length=1, max_length=1024)
    upload_id: str = Field(min_length=1, max_length=1024)


class PartUrls(MultipartUpload):
    part_numbers: list[int] = Field(min_length=1, max_length=500)


class UploadedPart(Body):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=200, description="the ETag the store answered for the part")


class CompleteUpload(MultipartUpload):
    parts: list[UploadedPart] = Field(min_length=1, max_length=10_000, description="every part, in order")


class DownloadFromDatastore(Body):
    paths: list[str] = Field(min_length=1, max_length=500)


class DatasetPath(Body):
    datastore: str = Field(max_length=255, json_schema_extra=checked_as(DATASTORE_NAME))
    path: str = Field(min_length=1, max_length=1024, description="a file, a folder or a glob (*, ?, [..], **)")


class RegisterDataset(Body):
    name: str = Field(max_length=255, json_schema_extra=checked_as(DATASET_NAME))
    type: Literal["file", "tabular"]
    paths: list[DatasetPath] = Field(min_length=1, max_length=100)
    format: Literal["delimited", "parquet", "json_lines"] | None = Field(
        default=None, description="tabular only (default: delimited)")
    options: dict[str, Any] = Field(default_factory=dict, max_length=10,
                                    description="delimited: separator, header, encoding")
    description: str = Field(default="", max_length=5000)
    tags: dict[str, str] = Field(default_factory=dict)
    create_new_version: bool = False


class DatasetFiles(Body):
    files: list[DatasetPath] = Field(min_length=1, max_length=500)


class AppendLog(Body):
    text: str = Field(min_length=1)


class UploadOutputs(Body):
    paths: list[str] = Field(min_length=1, max_length=500)


class UploadImage(Body):
    name: str = Field(max_length=255)
    extension: str = Field(default="png", max_length=8, json_schema_extra={"enum": list(IMAGE_EXTENSIONS)})


class DeploymentConfigBody(Body):
    memory_mb: WholeNumber = Field(1024, ge=128, le=10240)
    timeout_s: WholeNumber = Field(60, ge=1, le=900)
    reserved_concurrency: WholeNumber | None = Field(None, ge=0, le=1000)
    provisioned_concurrency: WholeNumber | None = Field(None, ge=1, le=1000)
    min_instances: WholeNumber = Field(0, ge=0, le=1000)
    max_instances: WholeNumber | None = Field(None, ge=1, le=1000)
    capture_rate: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def bounds_in_order(self) -> "DeploymentConfigBody":
        if self.max_instances is not None and self.min_instances > self.max_instances:
            raise ValueError("min_instances must not exceed max_instances")
        return self


class Deploy(Body):
    models: list[str] = Field(min_length=1, max_length=20)
    snapshot_id: str = Field(min_length=64, max_length=64)
    entry_script: str = Field(min_length=1, max_length=1024)
    environment: str | None = None
    config: DeploymentConfigBody = Field(default_factory=DeploymentConfigBody)


class SetTraffic(Body):
    traffic: dict[str, WholeNumber]


class RegenerateKey(Body):
    key: Literal["primary", "secondary"]


class ModelUpload(Body):
    # Entries stay loosely typed: the registry checks them and names the field as `files[i].path`.
    files: list[Any]


class RegisterModel(Body):
    """From an upload (`upload_id`) or from a run's stored files (`run_id` + `path`)."""

    upload_id: str | None = Field(default=None, max_length=64)
    run_id: str | None = Field(default=None, max_length=64)
    path: str | None = Field(default=None, max_length=1024)
    description: str = Field(default="", max_length=5000)
    tags: dict[str, str] = Field(default_factory=dict)
    properties: dict[str, str] = Field(default_factory=dict)
    framework: str | None = Field(default=None, max_length=255)
    framework_version: str | None = Field(default=None, max_length=255)


class UpdateModelVersion(Body):
    tags: dict[str, str] = Field(default_factory=dict)
    remove_tags: list[str] = Field(default_factory=list, max_length=200)
    properties: dict[str, str] = Field(default_factory=dict)
    description: str | None = Field(default=None, max_length=5000)


class SetAlias(Body):
    version: WholeNumber = Field(ge=1, le=9_999_999_999)


class EnvironmentDefinition(Body):
    """An environment version's definition. Entries stay loosely typed: the service checks them and
    names the field (`pip[2]`, `variables.FOO`)."""

    python: Any = None
    pip: Any = None
    variables: Any = None
    base_image: Any = None
