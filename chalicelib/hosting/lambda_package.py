"""What a deployment becomes on AWS Lambda, computed as plain data (no AWS calls; lambda_host.py sends it).

Shape: one Lambda function per endpoint, one published version per deployment revision, and the alias
`live` that splits the endpoint's traffic between deployments' versions (primary version + Lambda's
`AdditionalVersionWeights`). Lambda routes an alias to at most two versions, so on AWS at most two
deployments of an endpoint may have a weight above 0 (`alias_routing` refuses more).

A version freezes code *and* configuration, so a deployment is published as: update the function's
code, then its configuration, then publish. Two deployments of one endpoint published at the same time
would mix; the host checks the function still holds what it wrote before publishing (and publishes
with that RevisionId), so the loser gets a Conflict instead of a mixed version.

The package (zip):
  chalicelib/**.py, nimbus/**.py   the scoring runtime (handler, Model.get_model_path), from this checkout
  aws_lambda_powertools/**.py      bundled: the handler emits powertools Metrics, and Lambda's python3.11
  typing_extensions.py             runtime has boto3 but neither of these. Bundling the exact installed
                                   version (the one requirements.txt pins and the tests run) avoids a
                                   region-specific layer ARN and any drift between layer and code; the
                                   .py files add about 2.6 MB unzipped.
  orjson/                          the runtime's JSON codec, a compiled module: copied whole from the
                                   API function's own package, which Chalice builds for the same Lambda
                                   platform (Linux x86_64, CPython 3.11); packaging refuses any other build.
  source/<path>                    the deployment's source folder (bytes from the blob store)
Models are not packaged: their files stay in S3 (NIMBUS_MODEL_SOURCES) and the handler downloads them
at cold start, which keeps packages small and lets deployments share one model copy.

A deployment that names an environment runs in the environment's image instead (PackageType Image,
built by chalicelib/compute/image_build.py with the runtime interface client and the scoring runtime
inside): the image is shared by every deployment of that definition, so it cannot hold a deployment's
source folder. The host writes a source manifest per deployment revision to the bucket
(`source_manifest_key`, JSON {"files": [[path, blob key, size], ...]}) and the handler downloads the
files it lists to IMAGE_SOURCE_DIR at cold start (NIMBUS_SOURCE_MANIFEST). A Lambda function cannot
change its package type, and all deployments of an endpoint are versions of one function: the host
refuses a deployment whose type differs from the endpoint's function.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from chalicelib.errors import Invalid, NimbusError
from chalicelib.hosting.port import DeploymentSpec

RUNTIME = "python3.11"
HANDLER = "chalicelib.scoring.lambda_handler.handler"
ALIAS = "live"
TASK_ROOT = "/var/task"  # where Lambda unpacks a zip package
SOURCE_DIR = "source"
ZIP, IMAGE = "Zip", "Image"  # Lambda's PackageType values
# Image functions: the runtime interface client runs the handler; /tmp is the only writable folder, so the
# source folder is downloaded there and it is the working directory (as /var/task is for a zip package).
IMAGE_ENTRYPOINT = ("python", "-m", "awslambdaric")
IMAGE_WORKING_DIR = "/tmp"
IMAGE_SOURCE_DIR = "/tmp/nimbus-source"
PACKAGE_PREFIX = "lambda-packages/"  # + <function>/<sha256>.zip
SOURCE_MANIFEST_PREFIX = "lambda-sources/"  # + <function>/<deployment>/<revision>.json
# Lambda sets these itself and refuses them in a function's configuration.
LAMBDA_RESERVED_VARIABLES = re.compile(
    r"_HANDLER|_X_AMZN_TRACE_ID|AWS_REGION|AWS_DEFAULT_REGION|AWS_EXECUTION_ENV|AWS_LAMBDA_\w*|AWS_ACCESS_KEY\w*"
    r"|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|AWS_XRAY_\w*|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR")
# The handler enforces timeout_s itself (504) and downloads models at cold start: Lambda's own limit
# leaves room for both.
TIMEOUT_MARGIN_S = 30
MAX_TIMEOUT_S = 900
MEMORY_RANGE_MB = (128, 10240)
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024  # Lambda's limit for a function's unpacked package
MAX_ENVIRONMENT_BYTES = 4096  # Lambda's limit for all environment variables together
MAX_INVOKE_PAYLOAD = 6 * 1024 * 1024  # synchronous invoke, request and response
FUNCTION_NAME_MAX = 64

RUNTIME_PACKAGES = ("chalicelib", "nimbus", "aws_lambda_powertools")
RUNTIME_MODULES = ("typing_extensions",)  # single-file modules
NATIVE_PACKAGES = ("orjson",)  # every file, including the extension module
NATIVE_SUFFIX = ".cpython-311-x86_64-linux-gnu.so"  # what runs on Lambda's python3.11 (x86_64)
_SKIPPED_DIRS = {"__pycache__", "tests", "test"}


@dataclass(frozen=True)
class PackageEntry:
    """One file of the zip: read from this machine (`local_path`) or from the blob store (`blob_key`)."""

    arcname: str
    size: int
    local_path: str | None = None
    blob_key: str | None = None


# --- names ----------------------------------------------------------------------------------------


def function_prefix(table_name: str) -> str:
    """Every scoring function's name starts with this: IAM grants `function:<table>-score-*` only, so the
    API can manage scoring functions but not itself."""
    return _safe(table_name) + "-score-"


def function_name(table_name: str, workspace: str, endpoint: str) -> str:
    """Deterministic, at most 64 characters of [A-Za-z0-9_-]; a hash of the full identity keeps names
    unique when characters are replaced or the readable part is cut short."""
    digest = hashlib.sha256(f"{table_name}\n{workspace}\n{endpoint}".encode()).hexdigest()[:8]
    prefix = function_prefix(table_name)
    room = FUNCTION_NAME_MAX - len(prefix) - len(digest) - 1
    if room < 3:
        raise Invalid(f"table name {table_name!r} is too long to prefix Lambda function names", field="table")
    readable = _safe(f"{workspace}-{endpoint}")[:room].strip("-_") or "x"
    return f"{prefix}{readable}-{digest}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


# --- the package ----------------------------------------------------------------------------------


def runtime_entries() -> tuple[PackageEntry, ...]:
    """The runtime's *.py files as installed next to this module (reads the filesystem, not the network)."""
    entries: list[PackageEntry] = []
    for package in RUNTIME_PACKAGES:
        folder = _located(package, package=True)
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder.parent)
            if _SKIPPED_DIRS.intersection(relative.parts[:-1]):
                continue
            entries.append(PackageEntry(relative.as_posix(), path.stat().st_size, local_path=str(path)))
    for module in RUNTIME_MODULES:
        path = _located(module, package=False)
        entries.append(PackageEntry(path.name, path.stat().st_size, local_path=str(path)))
    for package in NATIVE_PACKAGES:
        folder = _located(package, package=True)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        if not any(p.name.endswith(NATIVE_SUFFIX) for p in files):
            raise NimbusError(f"cannot package the scoring runtime: the installed {package!r} is not built for "
                              f"Lambda's python3.11 on x86_64 (no *{NATIVE_SUFFIX} in {folder})")
        entries += [PackageEntry(p.relative_to(folder.parent).as_posix(), p.stat().st_size, local_path=str(p))
                    for p in files]
    return tuple(entries)


def _located(name: str, *, package: bool) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise NimbusError(f"cannot package the scoring runtime: Python package {name!r} is not installed here")
    origin = Path(spec.origin)
    return origin.parent if package else origin


def package_manifest(spec: DeploymentSpec, runtime: tuple[PackageEntry, ...]) -> tuple[PackageEntry, ...]:
    """The runtime plus the deployment's source files under `source/`, sorted by name (so the same input
    always zips to the same bytes and CodeSha256)."""
    paths = {f.path for f in spec.source}
    if spec.entry_script not in paths:
        raise Invalid(f"entry script {spec.entry_script!r} is not in the source folder", field="entry_script")
    entries = list(runtime)
    for item in spec.source:
        entries.append(PackageEntry(f"{SOURCE_DIR}/{_checked_source_path(item.path)}", item.size,
                                    blob_key=item.blob_key))
    total = sum(e.size for e in entries)
    if total > MAX_UNZIPPED_BYTES:
        raise Invalid(f"the scoring package would be {total} bytes unzipped; Lambda allows "
                      f"{MAX_UNZIPPED_BYTES}: keep large files out of the source folder (register them as models)",
                      field="snapshot_id")
    return tuple(sorted(entries, key=lambda e: e.arcname))


def _checked_source_path(path: str) -> str:
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or posixpath.normpath(path) != path or ".." in path.split("/")):
        raise Invalid(f"invalid source path {path!r}", field="source")
    return path


def package_key(function: str, code_sha256: str) -> str:
    """Where the zip waits in the bucket until Lambda has copied it (deleted once the function is written)."""
    return f"{PACKAGE_PREFIX}{function}/{code_sha256}.zip"


def source_manifest_key(function: str, deployment: str, revision: int) -> str:
    """Where an image function's source manifest is kept while its version exists."""
    return f"{SOURCE_MANIFEST_PREFIX}{function}/{_safe(deployment)}/{revision}.json"


def source_manifest(spec: DeploymentSpec) -> bytes:
    """What an image function downloads at cold start: {"files": [[path, blob key, size], ...]}, sorted by
    path; the entry script must be among them and the folder must fit where a zip package would."""
    if spec.entry_script not in {f.path for f in spec.source}:
        raise Invalid(f"entry script {spec.entry_script!r} is not in the source folder", field="entry_script")
    files = sorted([_checked_source_path(f.path), f.blob_key, f.size] for f in spec.source)
    total = sum(size for _, _, size in files)
    if total > MAX_UNZIPPED_BYTES:
        raise Invalid(f"the source folder is {total} bytes; a scoring function takes at most {MAX_UNZIPPED_BYTES}: "
                      "keep large files out of the source folder (register them as models)", field="snapshot_id")
    return json.dumps({"files": files}, separators=(",", ":")).encode("utf-8")


# --- configuration --------------------------------------------------------------------------------


def environment(spec: DeploymentSpec, *, table: str, bucket: str, source_manifest: str | None = None) -> dict[str, str]:
    """The function's variables. An image function (`source_manifest`: its key in the bucket) downloads its
    source folder to IMAGE_SOURCE_DIR; its environment's variables are ENV lines of the image, except those
    holding a line break (a Dockerfile ENV cannot), which are passed here."""
    sources = [
        {"name": m.name, "version": m.version, "asset_path": m.asset_path, "bucket": bucket,
         "prefix": m.blob_prefix, "files": [[path, size] for path, size in m.files]}
        for m in spec.models
    ]
    variables = {
        "NIMBUS_BACKEND": "aws",
        "NIMBUS_TABLE": table,
        "NIMBUS_BUCKET": bucket,
        "NIMBUS_ENDPOINT_WORKSPACE": spec.workspace,
        "NIMBUS_ENDPOINT": spec.endpoint,
        "NIMBUS_DEPLOYMENT": spec.deployment,
        "NIMBUS_REVISION": str(spec.revision),
        "NIMBUS_SOURCE_DIR": IMAGE_SOURCE_DIR if source_manifest else f"{TASK_ROOT}/{SOURCE_DIR}",
        "NIMBUS_ENTRY_SCRIPT": spec.entry_script,  # relative to NIMBUS_SOURCE_DIR
        "NIMBUS_TIMEOUT_S": str(spec.config.timeout_s),
        "NIMBUS_MODEL_SOURCES": json.dumps(sources, separators=(",", ":")),
        "NIMBUS_CAPTURE_RATE": repr(float(spec.config.capture_rate)),
        "NIMBUS_CAPTURE_PREFIX": spec.capture_prefix,
        "POWERTOOLS_SERVICE_NAME": "nimbus-scoring",
        "POWERTOOLS_METRICS_NAMESPACE": "Nimbus",
    }
    if source_manifest:
        variables["NIMBUS_SOURCE_MANIFEST"] = source_manifest  # a key in NIMBUS_BUCKET
    passed = _unbakeable_variables(spec) if source_manifest else {}
    variables.update(passed)
    size = _size(variables)
    if size > MAX_ENVIRONMENT_BYTES:
        if passed and size - _size(passed) <= MAX_ENVIRONMENT_BYTES:
            raise Invalid(f"the deployment's settings take {size} bytes of environment variables, above Lambda's "
                          f"{MAX_ENVIRONMENT_BYTES}, with {_size(passed)} bytes of environment variables holding line "
                          f"breaks ({', '.join(sorted(passed))}), which the image cannot set: shorten them or keep "
                          "them on one line", field="environment")
        raise Invalid(f"the deployment's settings take {size} bytes of environment variables, above Lambda's "
                      f"{MAX_ENVIRONMENT_BYTES}: mostly the model file list — register models with fewer files "
                      "(an archive or a folder of a few files)", field="models")
    return variables


def _size(variables: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())


def _unbakeable_variables(spec: DeploymentSpec) -> dict[str, str]:
    """The environment's variables that the image could not set as ENV (see image_build.dockerfile)."""
    variables = (spec.environment.definition.get("variables") or {}) if spec.environment else {}
    passed = {name: value for name, value in variables.items() if "\n" in value or "\r" in value}
    for name in sorted(passed):
        if LAMBDA_RESERVED_VARIABLES.fullmatch(name):
            raise Invalid(f"environment {spec.environment.ref}: variable {name} holds a line break, so it must be set "
                          "on the function, and Lambda reserves that name", field="environment")
    return passed


def check_config(spec: DeploymentSpec) -> None:
    config = spec.config
    low, high = MEMORY_RANGE_MB
    if not low <= config.memory_mb <= high:
        raise Invalid(f"memory_mb must be between {low} and {high} on Lambda", field="config.memory_mb")
    if not 1 <= config.timeout_s <= MAX_TIMEOUT_S - TIMEOUT_MARGIN_S:
        raise Invalid(f"timeout_s must be between 1 and {MAX_TIMEOUT_S - TIMEOUT_MARGIN_S} on Lambda",
                      field="config.timeout_s")
    for field in ("reserved_concurrency", "provisioned_concurrency"):
        value = getattr(config, field)
        if value is not None and value < (0 if field == "reserved_concurrency" else 1):
            raise Invalid(f"{field} must be a positive number", field=f"config.{field}")
    reserved, provisioned = reserved_concurrency(config), provisioned_concurrency(config)
    if reserved is not None and provisioned is not None and provisioned > reserved:
        raise Invalid(f"provisioned concurrency ({provisioned}, from provisioned_concurrency or min_instances) "
                      f"cannot exceed reserved concurrency ({reserved}, from reserved_concurrency or "
                      "max_instances)", field="config.provisioned_concurrency")
    if not 0.0 <= config.capture_rate <= 1.0:
        raise Invalid("capture_rate must be between 0 and 1", field="config.capture_rate")


@dataclass(frozen=True)
class FunctionPlan:
    """Every Lambda request of one deployment revision, as the exact keyword arguments boto3 takes.

    A zip function (`image_uri` None) gets its code from the host's zip; an image function runs the
    environment's image, with its source folder listed at `source_manifest` in the bucket.
    Reserved and provisioned concurrency belong to the function and to the alias, which are the endpoint's:
    the deployment deployed last sets them; None leaves them as they are.
    """

    function_name: str
    role_arn: str
    environment: dict[str, str]
    timeout: int
    memory_size: int
    description: str
    tags: dict[str, str]
    reserved_concurrency: int | None
    provisioned_concurrency: int | None
    image_uri: str | None = None
    source_manifest: str | None = None  # bucket key (image functions)

    @property
    def package_type(self) -> str:
        return IMAGE if self.image_uri else ZIP

    def image_code(self) -> dict:
        """The Code of an image function (a zip function's comes from the host's package)."""
        if not self.image_uri:
            raise NimbusError(f"function {self.function_name} is a zip function: it has no image")
        return {"ImageUri": self.image_uri}

    def _configuration(self) -> dict:
        request = {
            "FunctionName": self.function_name,
            "Role": self.role_arn,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "Description": self.description,
            "Environment": {"Variables": dict(self.environment)},
        }
        if self.image_uri:
            request["ImageConfig"] = {"EntryPoint": list(IMAGE_ENTRYPOINT), "Command": [HANDLER],
                                      "WorkingDirectory": IMAGE_WORKING_DIR}
        else:
            request.update(Handler=HANDLER, Runtime=RUNTIME)
        return request

    def create_function(self, code: dict) -> dict:
        return {**self._configuration(), "Code": dict(code), "Publish": False, "PackageType": self.package_type,
                "Tags": dict(self.tags)}

    def update_function_code(self, code: dict, revision_id: str | None = None) -> dict:
        request = {"FunctionName": self.function_name, **code, "Publish": False}
        return {**request, "RevisionId": revision_id} if revision_id else request

    def update_function_configuration(self, revision_id: str | None = None) -> dict:
        request = self._configuration()
        return {**request, "RevisionId": revision_id} if revision_id else request

    def publish_version(self, code_sha256: str, revision_id: str | None) -> dict:
        """CodeSha256 and RevisionId make Lambda refuse to publish if the function changed since it was read."""
        request = {"FunctionName": self.function_name, "CodeSha256": code_sha256, "Description": self.description}
        return {**request, "RevisionId": revision_id} if revision_id else request

    def create_alias(self, version: str) -> dict:
        """The endpoint's first deployment takes all its traffic."""
        return {"FunctionName": self.function_name, "Name": ALIAS, "FunctionVersion": version,
                "Description": "the endpoint's traffic split"}

    def put_function_concurrency(self) -> dict | None:
        if self.reserved_concurrency is None:
            return None
        return {"FunctionName": self.function_name, "ReservedConcurrentExecutions": self.reserved_concurrency}

    def put_provisioned_concurrency_config(self) -> dict | None:
        if self.provisioned_concurrency is None:
            return None
        return {"FunctionName": self.function_name, "Qualifier": ALIAS,
                "ProvisionedConcurrentExecutions": self.provisioned_concurrency}


def plan_function(spec: DeploymentSpec, *, table: str, bucket: str, role_arn: str) -> FunctionPlan:
    """A zip function, or an image function on the environment's image when the deployment names one."""
    check_config(spec)
    if not role_arn:
        raise NimbusError("NIMBUS_SCORING_ROLE_ARN is not set: scoring functions need an execution role")
    name = function_name(table, spec.workspace, spec.endpoint)
    image_uri = manifest = None
    if spec.environment is not None:
        image_uri = spec.environment.image_uri
        if not image_uri:
            raise NimbusError(f"environment {spec.environment.ref} has no built image to run the deployment in",
                              field="environment")
        manifest = source_manifest_key(name, spec.deployment, spec.revision)
    return FunctionPlan(
        function_name=name,
        role_arn=role_arn,
        environment=environment(spec, table=table, bucket=bucket, source_manifest=manifest),
        timeout=spec.config.timeout_s + TIMEOUT_MARGIN_S,
        memory_size=spec.config.memory_mb,
        description=f"{spec.workspace}/{spec.endpoint}/{spec.deployment} revision {spec.revision}"[:256],
        tags={"nimbus:table": table, "nimbus:workspace": spec.workspace, "nimbus:endpoint": spec.endpoint},
        reserved_concurrency=reserved_concurrency(spec.config),
        provisioned_concurrency=provisioned_concurrency(spec.config),
        image_uri=image_uri,
        source_manifest=manifest,
    )


def reserved_concurrency(config) -> int | None:
    """The cap on concurrent sandboxes: reserved concurrency, else the autoscale upper bound."""
    return config.reserved_concurrency if config.reserved_concurrency is not None else config.max_instances


def provisioned_concurrency(config) -> int | None:
    """Sandboxes kept warm: provisioned concurrency, else the autoscale lower bound (0: scale to zero)."""
    if config.provisioned_concurrency is not None:
        return config.provisioned_concurrency
    return config.min_instances or None


# --- traffic --------------------------------------------------------------------------------------


def alias_routing(traffic: dict[str, int], versions: dict[str, str]) -> tuple[str, dict[str, float]]:
    """(primary version, AdditionalVersionWeights) for the alias, from deployment weights (0-100).

    The primary is the deployment with the highest weight (ties: the first name); Lambda allows one
    additional version, so at most two deployments may carry traffic.
    """
    live = sorted(((w, d) for d, w in traffic.items() if w > 0), key=lambda item: (-item[0], item[1]))
    if not live:
        raise Invalid("at least one deployment must have a weight above 0", field="traffic")
    if len(live) > 2:
        names = ", ".join(d for _, d in live)
        raise Invalid(f"on AWS Lambda at most two deployments of an endpoint can receive traffic ({names} have "
                      "weights above 0): an alias routes to one additional version only", field="traffic")
    missing = [d for _, d in live if not versions.get(d)]
    if missing:
        raise Invalid(f"deployment {missing[0]!r} has no published function version to route to", field="traffic")
    total = sum(w for w, _ in live)
    (_, primary), *others = live
    return versions[primary], {versions[d]: round(w / total, 4) for w, d in others}


def update_alias(function: str, traffic: dict[str, int], versions: dict[str, str]) -> dict:
    primary, additional = alias_routing(traffic, versions)
    return {"FunctionName": function, "Name": ALIAS, "FunctionVersion": primary,
            "RoutingConfig": {"AdditionalVersionWeights": additional}}
