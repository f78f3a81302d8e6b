"""Versioned environments: what a run's script needs installed, as numbered, content-hashed definitions.

A definition is {python, pip, variables, base_image}; its canonical JSON's sha256 is its `hash`, which
names the build (a virtualenv locally, a container image on AWS), so identical definitions, under any
name, build once. Versions are numbered like the model registry's; registering the latest version's
definition again returns that version. A version is immutable once a run names it (`used`).
See docs/compute.md, "Environments".
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from chalicelib.compute.image_build import ImageBuilds
from chalicelib.errors import Conflict, Invalid, NotFound, Unavailable
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.contention import contention_pause
from chalicelib.domain.validation import check_name
from chalicelib.services.audit import Audit
from chalicelib.services.identity import Principal
from chalicelib.services.registry_input import parse_version
from chalicelib.services.workspaces import Workspaces
from chalicelib.store.table import (
    Check, ConditionFailed, Operation, Put, Query, Update, all_of, attr_absent, attr_eq, item_absent, item_exists,
)

ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
ENV_RULE = "1-255 characters: letters, digits, '_', '.' and '-', starting with a letter or digit"
PYTHON_VERSION = re.compile(r"\d+\.\d+")
DEFAULT_PYTHON = "3.11"  # the platform's own interpreter, so a local run needs no other Python
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_PIP_LINES = 500
MAX_PIP_LINE = 1000
MAX_VARIABLES = 200
MAX_VARIABLE_VALUE = 8192
MAX_DEFINITION_BYTES = 100 * 1024  # the version item also holds names and dates; DynamoDB caps it at 400 KB
# pip options a requirements file may carry: where packages come from, and which kind to take. Options
# naming files (-r, -c, -e) are refused: those files are not part of the definition, so not of its hash.
PIP_OPTIONS_WITH_VALUE = frozenset({"--find-links", "-f", "--index-url", "-i", "--extra-index-url", "--trusted-host",
                                    "--only-binary", "--no-binary"})
PIP_FLAGS = frozenset({"--no-index", "--pre", "--prefer-binary"})
# A docker image reference: [registry[:port]/]path[:tag][@sha256:digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d+)?/)?"
IMAGE_REFERENCE = re.compile(rf"{_REGISTRY}{_COMPONENT}(?:/{_COMPONENT})*(?::\w[\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?")
CREATE_ATTEMPTS = 100


def check_environment_name(name: Any, field: str = "name") -> str:
    return check_name(name, ENV_NAME, field, ENV_RULE)


def parse_environment_ref(ref: Any, field: str = "run_config.environment") -> tuple[str, str]:
    """'name:version', 'name:latest' or 'name' (the latest) as (name, version-or-'latest')."""
    if not isinstance(ref, str) or not ref:
        raise Invalid(f"{field} must be 'name' or 'name:version'", field=field)
    name, _, version = ref.partition(":")
    check_environment_name(name, field)
    return name, version or "latest"


# --- definitions ------------------------------------------------------------------------------------
def normalize_definition(python: Any = None, pip: Any = None, variables: Any = None, base_image: Any = None) -> dict:
    """The canonical definition, checked; errors name their field (`pip[2]`, `variables.FOO`)."""
    python = DEFAULT_PYTHON if python is None else python
    if not isinstance(python, str) or not PYTHON_VERSION.fullmatch(python):
        raise Invalid(f"python {python!r} must be a major.minor version such as '3.11'", field="python")
    definition = {"python": python, "pip": check_pip(pip), "variables": check_variables(variables),
                  "base_image": check_base_image(base_image, python)}
    if len(canonical_json(definition)) > MAX_DEFINITION_BYTES:
        raise Invalid(f"the definition exceeds {MAX_DEFINITION_BYTES} bytes", field="pip")
    return definition


def canonical_json(definition: dict) -> bytes:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def definition_hash(definition: dict) -> str:
    return hashlib.sha256(canonical_json(definition)).hexdigest()


def check_pip(pip: Any) -> list[str]:
    """Requirement lines as pip reads them (PEP 508, URLs included), or a source option such as
    `--find-links /wheels`. Surrounding spaces go; the order stays (pip options depend on it)."""
    if pip is None:
        return []
    if not isinstance(pip, list) or len(pip) > MAX_PIP_LINES:
        raise Invalid(f"pip must be a list of at most {MAX_PIP_LINES} requirement lines", field="pip")
    lines = []
    for index, line in enumerate(pip):
        field = f"pip[{index}]"
        if not isinstance(line, str) or not line.strip() or len(line) > MAX_PIP_LINE or "\n" in line or "\r" in line:
            raise Invalid(f"{field} must be one non-empty line of at most {MAX_PIP_LINE} characters", field=field)
        line = line.strip()
        if line.startswith("-"):
            _check_pip_option(line, field)
        else:
            try:
                Requirement(line)
            except InvalidRequirement as err:
                raise Invalid(f"{field} {line!r} is not a valid requirement: {err}", field=field) from None
        lines.append(line)
    return lines


def _check_pip_option(line: str, field: str) -> None:
    option, _, value = line.replace("=", " ", 1).partition(" ") if line.startswith("--") else line.partition(" ")
    value = value.strip()
    if option in PIP_FLAGS and not value:
        return
    if option in PIP_OPTIONS_WITH_VALUE and value and " " not in value:
        return
    allowed = ", ".join(sorted(PIP_FLAGS | {f"{o} VALUE" for o in PIP_OPTIONS_WITH_VALUE}))
    raise Invalid(f"{field} {line!r} is not an allowed pip option (allowed: {allowed})", field=field)


def check_variables(variables: Any) -> dict[str, str]:
    if variables is None:
        return {}
    if not isinstance(variables, dict) or len(variables) > MAX_VARIABLES:
        raise Invalid(f"variables must map at most {MAX_VARIABLES} names to strings", field="variables")
    for name, value in variables.items():
        if not isinstance(name, str) or not VARIABLE_NAME.fullmatch(name):
            raise Invalid(f"variables: {name!r} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128 "
                          "characters)", field="variables")
        if name.startswith("NIMBUS_"):  # the runner sets these for the script to find its run
            raise Invalid(f"variables.{name}: names starting NIMBUS_ are reserved", field=f"variables.{name}")
        if not isinstance(value, str) or len(value) > MAX_VARIABLE_VALUE or "\x00" in value:
            raise Invalid(f"variables.{name} must be a string of at most {MAX_VARIABLE_VALUE} characters",
                          field=f"variables.{name}")
    return dict(sorted(variables.items()))


def check_base_image(base_image: Any, python: str) -> str:
    if base_image is None:
        return f"python:{python}-slim"
    if not isinstance(base_image, str) or len(base_image) > 255 or not IMAGE_REFERENCE.fullmatch(base_image):
        raise Invalid(f"base_image {base_image!r} is not a docker image reference (e.g. python:3.11-slim)",
                      field="base_image")
    return base_image


# --- the service ------------------------------------------------------------------------------------
class Environments:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def create(self, principal: Principal, workspace: str, name: str, *, python: Any = None, pip: Any = None,
               variables: Any = None, base_image: Any = None) -> tuple[dict, bool]:
        """(the version, whether it is new): the latest version when its definition is the same."""
        check_environment_name(name)
        definition = normalize_definition(python, pip, variables, base_image)
        digest = definition_hash(definition)
        record = Workspaces(self.ctx).record(workspace)
        name_key = table_keys.environment(workspace, name)
        for attempt in range(CREATE_ATTEMPTS):
            current = int((self.ctx.table.get_item(name_key) or {}).get("latest_version", 0))
            if current:
                latest = self.ctx.table.get_item(table_keys.environment_version(workspace, name, current))
                if latest is not None and latest["hash"] == digest:
                    return self._view(workspace, latest), False
            version = current + 1
            key = table_keys.environment_version(workspace, name, version)
            item = {"pk": key.pk, "sk": key.sk, "entity": "environment_version", "workspace": workspace, "name": name,
                    "version": version, "definition": definition, "hash": digest, "used": False,
                    "created": self.ctx.now(), "created_by": principal.user}
            bump = Update(name_key, set={"latest_version": version},
                          set_if_absent={"entity": "environment", "workspace": workspace, "name": name},
                          condition=attr_eq("latest_version", current) if current else attr_absent("latest_version"))
            try:
                # The check on the workspace's id keeps a version out of a workspace deleted meanwhile.
                self.ctx.table.transact([bump, Put(item, item_absent()),
                                         Check(table_keys.workspace(workspace), attr_eq("id", record["id"])),
                                         Audit(self.ctx).entry(principal, workspace, "environment_version.created",
                                                               f"{name}:{version}", {"hash": digest},
                                                               workspace_id=record["id"])])
            except ConditionFailed as failure:
                if failure.index == 2:
                    raise NotFound(f"workspace {workspace!r} not found") from None
                time.sleep(contention_pause(attempt))  # another registration won: read the new latest and decide again
                continue
            self._start_image_build(workspace, item)
            return self._view(workspace, item), True
        raise Unavailable(f"too many concurrent registrations of environment {name!r}; retry")

    def get(self, workspace: str, name: str, version: Any) -> dict:
        return self._view(workspace, self._find(workspace, name, version), builds=True)

    def resolve(self, workspace: str, ref: Any, field: str = "run_config.environment") -> dict:
        """The stored version item `ref` names; unknown → Invalid naming `field` (a bad request, not a path)."""
        name, version = parse_environment_ref(ref, field)
        try:
            return self._find(workspace, name, version, field)
        except NotFound as err:
            raise Invalid(err.message, field=field) from None

    def list(self, workspace: str) -> dict:
        """Every environment's latest version, by name."""
        names = self.ctx.table.query_all(Query(table_keys.workspace_pk(workspace), sk_prefix=table_keys.ENVIRONMENT_PREFIX))
        found = []
        for entry in names:
            item = self.ctx.table.get_item(table_keys.environment_version(workspace, entry["name"],
                                                                    int(entry["latest_version"])))
            if item is not None:
                found.append(self._view(workspace, item))
        return {"environments": found}

    def replace(self, principal: Principal, workspace: str, name: str, version: Any, *, python: Any = None,
                pip: Any = None, variables: Any = None, base_image: Any = None) -> dict:
        """A new definition for a version no run has named yet (409 once one has)."""
        item = self._find(workspace, name, version)
        _check_unused(item)
        definition = normalize_definition(python, pip, variables, base_image)
        digest = definition_hash(definition)
        update = Update(table_keys.environment_version(workspace, name, int(item["version"])),
                        set={"definition": definition, "hash": digest, "updated": self.ctx.now(),
                             "updated_by": principal.user},
                        condition=all_of(item_exists(), attr_eq("used", False)))
        audited = Audit(self.ctx).entry(principal, workspace, "environment_version.replaced",
                                        f"{name}:{item['version']}", {"from_hash": item["hash"], "hash": digest})
        try:
            self.ctx.table.transact([update, audited])
        except ConditionFailed:
            current = self.ctx.table.get_item(update.key)
            if current is None:
                raise NotFound(f"environment {name}:{item['version']} not found in workspace {workspace!r}") from None
            _check_unused(current)
            raise Conflict(f"environment {name}:{item['version']} changed meanwhile; retry") from None
        new = self.ctx.table.get_item(update.key) or {**item, **update.set}
        if digest != item["hash"]:
            self._start_image_build(workspace, new)
        return self._view(workspace, new)

    # --- in use by runs (called by the submissions service) ------------------------------------
    def use_operations(self, workspace: str, item: dict) -> list[Operation]:
        """Marks the version used, in the submit transaction. The condition on its hash fails the
        transaction if the definition was replaced since `item` was read, so a run never records a
        definition other than the one it runs."""
        key = table_keys.environment_version(workspace, item["name"], int(item["version"]))
        return [Update(key, set={"used": True}, condition=all_of(item_exists(), attr_eq("hash", item["hash"])))]

    def environment_for(self, workspace: str, run_config: dict) -> tuple[dict | None, list[Operation], dict]:
        """(the version run_config names or None, the writes that mark it used, run_config with the
        reference pinned to 'name:version' so the runner prepares what was resolved now)."""
        ref = run_config.get("environment")
        if ref is None:
            return None, [], run_config
        item = self.resolve(workspace, ref)
        pinned = {**run_config, "environment": f"{item['name']}:{int(item['version'])}"}
        return item, self.use_operations(workspace, item), pinned

    # --- builds ---------------------------------------------------------------------------------
    def builds(self, workspace: str, digest: str) -> list[dict]:
        """This workspace's builds of a definition (an image build is refreshed while it runs)."""
        found = []
        for item in self.ctx.table.query_all(Query(table_keys.environment_builds_pk(digest))):
            if item["sk"] != table_keys.IMAGE_BUILD_KIND + workspace:
                continue
            if item.get("state") == "Building" and item.get("build_id") and self.ctx.settings.codebuild_project:
                item = ImageBuilds(self.ctx).refresh(workspace, digest)
            found.append(build_view(item))
        return found

    def built_image(self, workspace: str, item: dict, field: str) -> str:
        """The version's container image (a Batch job or a Lambda function runs in it); Conflict naming
        `field` until its build has Succeeded."""
        if not self.ctx.settings.codebuild_project:
            raise Invalid("this deployment of Nimbus builds no environment images (NIMBUS_CODEBUILD_PROJECT is not "
                          "set): leave the environment out", field=field)
        image = ImageBuilds(self.ctx).ready_image(workspace, item, self._images_prefix(workspace))
        if image is None:
            raise Conflict(f"environment {item['name']}:{item['version']} has no built image yet; try again when "
                           "its build has Succeeded (`nimbus environment show` gives the build's state)", field=field)
        return image

    def _start_image_build(self, workspace: str, item: dict) -> None:
        """On AWS with a CodeBuild project configured, a new definition's image starts building at once."""
        if self.ctx.settings.backend != "aws" or not self.ctx.settings.codebuild_project:
            return
        ImageBuilds(self.ctx).start(workspace, item, self._images_prefix(workspace))

    def _images_prefix(self, workspace: str) -> str:
        """Where a workspace's image builds keep their context and log, under its blob prefix."""
        return f"{Workspaces(self.ctx).record(workspace)['blob_prefix']}environments/"

    # --- helpers --------------------------------------------------------------------------------
    def _find(self, workspace: str, name: str, version: Any, field: str = "version") -> dict:
        check_environment_name(name, "name" if field == "version" else field)
        text = str(version)
        if text == "latest":
            page = self.ctx.table.query(Query(table_keys.workspace_pk(workspace),
                                              sk_prefix=table_keys.environment_versions_prefix(name), forward=False, limit=1))
            item = page.items[0] if page.items else None
        else:
            number = parse_version(text, field)
            item = self.ctx.table.get_item(table_keys.environment_version(workspace, name, number))
        if item is None:
            raise NotFound(f"environment {name}:{text} not found in workspace {workspace!r}")
        return item

    def _view(self, workspace: str, item: dict, builds: bool = False) -> dict:
        version = int(item["version"])
        view = {"name": item["name"], "version": version, "id": f"{item['name']}:{version}",
                "definition": item["definition"], "hash": item["hash"], "used": bool(item.get("used")),
                "created": item["created"], "created_by": item["created_by"]}
        if item.get("updated"):
            view["updated"] = item["updated"]
        if builds:
            view["builds"] = self.builds(workspace, item["hash"])
        return view


def environment_for(ctx: Context, workspace: str, run_config: dict) -> tuple[dict | None, list[Operation], dict]:
    """For the submit transaction: see Environments.environment_for."""
    return Environments(ctx).environment_for(workspace, run_config)


def build_view(item: dict) -> dict:
    return {"kind": item["sk"].split("#", 1)[0], "state": item["state"], "image_uri": item.get("image_uri"),
            "build_id": item.get("build_id"), "log_key": item.get("log_key"), "error": item.get("error"),
            "started": item.get("started"), "finished": item.get("finished")}


def _check_unused(item: dict) -> None:
    if item.get("used"):
        raise Conflict(f"environment {item['name']}:{item['version']} is used by a run and cannot change; register a "
                       "new version instead", field="version")
