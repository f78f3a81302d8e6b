"""A submitted run's dataset inputs: each pinned to a version and its fingerprint when the run is submitted,
and recorded as a use of that version (the lineage from a dataset to the runs that read it).

The stored run_config's `inputs` is what the runner materialises; a `${{inputs.<name>}}` in the arguments
is replaced there by the input's local folder. A use item per input, written in the run's own
transaction, lets a dataset version list its runs with one Query.
"""
from __future__ import annotations

import re

from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.errors import Invalid, NotFound
from chalicelib.services.datasets import Datasets
from chalicelib.store.table import Operation, Put

PLACEHOLDER = re.compile(r"\$\{\{inputs\.([A-Za-z_][A-Za-z0-9_]{0,63})\}\}")
MAX_INPUTS = 20


def pin_inputs(ctx: Context, workspace: str, run_id: str, run_config: dict) -> tuple[dict, list[Operation]]:
    """(run_config with each input's version and fingerprint fixed, the writes recording the uses)."""
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
    names = {i["name"] for i in pinned}
    if len(names) != len(pinned):
        raise Invalid("two inputs share a name", field="run_config.inputs")
    for index, argument in enumerate(run_config.get("arguments") or []):
        for name in PLACEHOLDER.findall(argument):
            if name not in names:
                raise Invalid(f"run_config.arguments[{index}] names input {name!r}, which the run does not declare",
                              field=f"run_config.arguments[{index}]")
    if not inputs:
        return run_config, []
    return {**run_config, "inputs": pinned}, writes
