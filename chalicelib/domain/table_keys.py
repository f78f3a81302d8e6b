"""The single table's keys: Key, and a builder for every entity (docs/data-model.md explains each pattern)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    pk: str
    sk: str


def user(name: str) -> Key:
    return Key(f"USER#{name}", "PROFILE")


USERS_INDEX_PK = "USERS"  # gsi1: every user, by name


def token_digest(token: str) -> str:
    """What a token item is keyed by: the token itself is never stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def token(token_hash: str) -> Key:
    return Key(f"TOKEN#{token_hash}", "TOKEN")


def tokens_of_index_pk(user_name: str) -> str:  # gsi1: a user's tokens and workspaces
    return f"USER#{user_name}"


def workspace(name: str) -> Key:
    return Key(f"WS#{name}", "META")


def workspace_pk(name: str) -> str:
    return f"WS#{name}"


def member(workspace_name: str, user_name: str) -> Key:
    return Key(f"WS#{workspace_name}", f"MEMBER#{user_name}")


def experiment(workspace_name: str, name: str) -> Key:
    return Key(f"WS#{workspace_name}", f"EXP#{name}")


def run(run_id: str) -> Key:
    return Key(f"RUN#{run_id}", "RUN")


def run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def experiment_runs_index_pk(workspace_name: str, experiment_name: str) -> str:  # gsi1
    return f"EXP#{workspace_name}#{experiment_name}"


def children_index_pk(parent_id: str) -> str:  # gsi2
    return f"CHILDREN#{parent_id}"


def metric_prefix(name: str) -> str:
    """Metric names may hold any character; the key holds a digest so prefixes never collide."""
    return f"MET#{hashlib.sha256(name.encode()).hexdigest()[:20]}#"


def log_stream(run_id: str, stream: str) -> Key:
    return Key(f"RUN#{run_id}", f"LOGSTREAM#{stream}")


def log_chunk_prefix(stream: str) -> str:
    return f"LOG#{stream}#"


def log_chunk_sk(stream: str, offset: int) -> str:
    return f"LOG#{stream}#{offset:015d}"


# --- model registry (docs/models-and-endpoints.md) --------------------------------------------------
MODEL_PREFIX = "MODEL#"


def model(workspace_name: str, name: str) -> Key:
    return Key(f"WS#{workspace_name}", f"MODEL#{name}")


def model_version(workspace_name: str, name: str, version: int) -> Key:
    return Key(f"WS#{workspace_name}", f"MODELV#{name}#{version:010d}")


def model_versions_prefix(name: str) -> str:
    """Names never hold '#', so one model's prefix cannot match another's."""
    return f"MODELV#{name}#"


def model_upload_registration(workspace_name: str, name: str, upload_id: str) -> Key:
    """Which version an upload became: a repeated registration of the upload answers that version."""
    return Key(f"WS#{workspace_name}", f"MODELUPLOAD#{name}#{upload_id}")


def model_alias_move(workspace_name: str, name: str, sequence: int) -> Key:
    """`sequence` counts the model's alias moves (`alias_moves` on the model item): history in order."""
    return Key(f"WS#{workspace_name}", f"MODELALIAS#{name}#{sequence:010d}")


def model_alias_moves_prefix(name: str) -> str:
    return f"MODELALIAS#{name}#"


def endpoint(workspace_name: str, name: str) -> Key:
    return Key(f"WS#{workspace_name}", f"ENDPOINT#{name}")


def deployment_prefix(endpoint_name: str) -> str:
    return f"DEPLOY#{endpoint_name}#"


def deployment(workspace_name: str, endpoint_name: str, name: str) -> Key:
    return Key(f"WS#{workspace_name}", f"DEPLOY#{endpoint_name}#{name}")


# --- compute targets (docs/compute.md) ----------------------------------------------------------------
COMPUTE_PREFIX = "COMPUTE#"


def compute_target(workspace_name: str, name: str) -> Key:
    return Key(f"WS#{workspace_name}", f"COMPUTE#{name}")


def active_runs_pk(workspace_name: str, target: str) -> str:
    """A target's runs that have not ended: any of them blocks its deletion."""
    return f"ACTIVE#{workspace_name}#{target}"


def active_run(workspace_name: str, target: str, run_id: str) -> Key:
    return Key(active_runs_pk(workspace_name, target), run_id)


def instance_queue_pk(workspace_name: str, target: str) -> str:
    """An `instance` target's queued runs, oldest first (run ids are time-ordered), until an agent claims one."""
    return f"QUEUE#{workspace_name}#{target}"


def instance_queue_entry(workspace_name: str, target: str, run_id: str) -> Key:
    return Key(instance_queue_pk(workspace_name, target), run_id)


# --- workspace secrets (docs/execution.md, "Secrets") ---------------------------------------------
SECRET_PREFIX = "SECRET#"


def workspace_secret(workspace_name: str, name: str) -> Key:
    """What is known of a secret (who set it, when), never its value: that lives in the Secrets port."""
    return Key(f"WS#{workspace_name}", f"SECRET#{name}")


# --- environments (docs/compute.md, "Environments") -------------------------------------------------
def environment(workspace_name: str, name: str) -> Key:
    return Key(f"WS#{workspace_name}", f"ENVNAME#{name}")


ENVIRONMENT_PREFIX = "ENVNAME#"


def environment_version(workspace_name: str, name: str, version: int) -> Key:
    return Key(f"WS#{workspace_name}", f"ENV#{name}#{version:010d}")


def environment_versions_prefix(name: str) -> str:
    """Names never hold '#', so one environment's prefix cannot match another's (nor `ENVNAME#`)."""
    return f"ENV#{name}#"


IMAGE_BUILD_KIND = "image#"  # + workspace: images live in the workspace's own ECR repository


def environment_build(definition_hash: str, kind: str) -> Key:
    """One build of a definition: `kind` is `image#<workspace>` for a workspace's container image."""
    return Key(f"BUILD#{definition_hash}", kind)


def environment_builds_pk(definition_hash: str) -> str:
    return f"BUILD#{definition_hash}"


# --- audit log (docs/data-model.md, "Audit log") ----------------------------------------------------
def audit_log_pk(workspace_name: str, workspace_id: str) -> str:
    """A workspace's log, keyed by its id too: a workspace re-created under the same name starts afresh,
    and the log of a deleted one stays where it was."""
    return f"AUDIT#{workspace_name}#{workspace_id}"


def audit_entry(workspace_name: str, workspace_id: str, entry_id: str) -> Key:
    return Key(audit_log_pk(workspace_name, workspace_id), entry_id)


# --- datastores (docs/datasets.md) ------------------------------------------------------------------
DATASTORE_PREFIX = "DATASTORE#"


def datastore(workspace_name: str, name: str) -> Key:
    """A registered datastore's connection information; its credentials live in the Secrets port."""
    return Key(f"WS#{workspace_name}", f"DATASTORE#{name}")


# --- datasets (docs/datasets.md) --------------------------------------------------------------------
DATASET_PREFIX = "DATASET#"
DATASET_VERSION_PREFIX = "DATASETV#"


def dataset(workspace_name: str, name: str) -> Key:
    """A dataset's name: its latest version, description; the versions are items of their own."""
    return Key(f"WS#{workspace_name}", f"DATASET#{name}")


def dataset_version(workspace_name: str, name: str, version: int) -> Key:
    return Key(f"WS#{workspace_name}", f"{DATASET_VERSION_PREFIX}{name}#{version:010d}")


def dataset_versions_prefix(name: str) -> str:
    """Names never hold '#', so one dataset's prefix cannot match another's."""
    return f"{DATASET_VERSION_PREFIX}{name}#"


def dataset_identity(workspace_name: str, name: str, identity: str) -> Key:
    """Which version a definition over unchanged data became: registering it again answers that version."""
    return Key(f"WS#{workspace_name}", f"DATASETID#{name}#{identity}")


def dataset_use(workspace_name: str, name: str, version: int, run_id: str) -> Key:
    """A run that read a dataset version: lineage from the version to its runs, by Query."""
    return Key(f"WS#{workspace_name}", f"DATASETUSE#{name}#{version:010d}#{run_id}")


def dataset_uses_prefix(name: str, version: int) -> str:
    return f"DATASETUSE#{name}#{version:010d}#"


def run_dataset_output(run_id: str, name: str, version: int) -> Key:
    """A dataset version a run wrote (registered with its token): lineage from the run to its outputs."""
    return Key(run_pk(run_id), f"DATASETOUT#{name}#{version:010d}")


RUN_DATASET_OUTPUT_PREFIX = "DATASETOUT#"
