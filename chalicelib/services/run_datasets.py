"""A submitted run's datasets, checked and fixed when it is submitted (docs/datasets.md, "Datasets in runs").

Inputs: each pinned to a version and its fingerprint, and recorded as a use of that version (the
lineage from a dataset to the runs that read it): a use item per input, written in the run's own
transaction, lets a version list its runs with one Query. Outputs: their datastore must exist and
their path (`{run-id}` replaced) be a valid path; the runner uploads them when the script succeeds and
registers those with `register_as`, through the run's token, so each such version names the run that
wrote it. `${{inputs.<name>}}` and `${{outputs.<name>}}` in the arguments must name what the run declares.
"""
from __future__ import annotations

import re

from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.errors import Invalid, NotFound
from chalicelib.services.datasets import Datasets, check_dataset_name
from chalicelib.services.datastores import Datastores
from chalicelib.services.outputs import check_output_path
from chalicelib.store.table import Operation, Put

PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]{0,63})\}\}")
MAX_INPUTS = MAX_OUTPUTS = 20


def pin_datasets(ctx: Context, workspace: str, run_id: str, run_config: dict) -> tuple[dict, list[Operation]]:
    """(run_config with each input's version and fingerprint fixed and each output's path resolved, the
    writes recording the inputs' uses)."""
    pinned, writes = _pin_inputs(ctx, workspace, run_id, run_config)
    outputs = _resolve_outputs(ctx, workspace, run_id, run_config)
    declared = {"inputs": {i["name"] for i in pinned}, "outputs": {o["name"] for o in outputs}}
    for index, argument in enumerate(run_config.get("arguments") or []):
        for kind, name in PLACEHOLDER.findall(argument):
            if name not in declared[kind]:
                raise Invalid(f"run_config.arguments[{index}] names {kind[:-1]} {name!r}, which the run does not "
                              "declare", field=f"run_config.arguments[{index}]")
    if pinned:
        run_config = {**run_config, "inputs": pinned}
    if outputs:
        run_config = {**run_config, "outputs": outputs}
    return run_config, writes


def _resolve_outputs(ctx: Context, workspace: str, run_id: str, run_config: dict) -> list[dict]:
    outputs = run_config.get("outputs") or []
    if len(outputs) > MAX_OUTPUTS:
        raise Invalid(f"a run takes at most {MAX_OUTPUTS} outputs", field="run_config.outputs")
    resolved = []
    for index, entry in enumerate(outputs):
        field = f"run_config.outputs[{index}]"
        try:
            Datastores(ctx, None, None).record(workspace, entry["datastore"])
        except NotFound:
            raise NotFound(f"{field}: no datastore {entry['datastore']!r} in workspace {workspace!r}",
                           field=f"{field}.datastore") from None
        path = check_output_path(str(entry["path"]).replace("{run-id}", run_id).strip("/"), f"{field}.path")
        if entry.get("register_as"):
            check_dataset_name(entry["register_as"], f"{field}.register_as")
        resolved.append({"name": entry["name"], "datastore": entry["datastore"], "path": path,
                         "register_as": entry.get("register_as")})
    if len({o["name"] for o in resolved}) != len(resolved):
        raise Invalid("two outputs share a name", field="run_config.outputs")
    return resolved


def _pin_inputs(ctx: Context, workspace: str, run_id: str, run_config: dict) -> tuple[list[dict], list[Operation]]:
    inputs = run_config.get("inputs") or []
    if len(inputs) > MAX_INPUTS:
        raise Invalid(f"a run takes at most {MAX_INPUTS} inputs", field="run_config.inputs")
    datasets, pinned, writes = Datasets(ctx, None), [], []
    for index, entry in enumerate(inputs):
        field = f"run_config.inputs[{index}]"
        try:
            item = datasets.version_item(workspace, entry["dataset"], entry.get("version") or "latest")
        except NotFound as missing:
            raise NotFound(f"{field}: {missing.message}", field=f"{field}.dataset") from None
        pinned.append({"name": entry["name"], "dataset": item["name"], "version": int(item["version"]),
                       "mode": entry.get("mode") or "download", "type": item["type"],
                       "fingerprint": item["fingerprint"]})
        key = table_keys.dataset_use(workspace, item["name"], int(item["version"]), run_id)
        writes.append(Put({"pk": key.pk, "sk": key.sk, "entity": "dataset_use", "run_id": run_id,
                           "input": entry["name"], "at": ctx.now()}))
    if len({i["name"] for i in pinned}) != len(pinned):
        raise Invalid("two inputs share a name", field="run_config.inputs")
    return pinned, writes
