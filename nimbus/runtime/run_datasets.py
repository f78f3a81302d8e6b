"""A run's datasets: its inputs made ready by the runner before the script starts, its outputs delivered
after the script succeeds (docs/datasets.md, "Datasets in runs").

`download` and `mount` inputs: the version's files are fetched with the run's token into the machine's
dataset cache (keyed by the version's fingerprint, so a second run on the machine fetches 0 bytes) and
copied into `<working folder>/.nimbus/inputs/<name>/`, where the script may read them whatever its
sandbox (a copy: a script that writes there cannot change the cache). No FUSE mount is made: `mount`
is a download, which the run's log says. `direct` inputs are handed over as the dataset itself.

The script finds them in NIMBUS_INPUT_DATASETS ({name: {dataset, version, mode, type, path}}), which
Run.get_context().input_datasets reads, and `${{inputs.<name>}}` in its arguments becomes the folder
(or, for a direct input, `name:version`).

Outputs: an empty folder `<working folder>/.nimbus/outputs/<name>/` for each (NIMBUS_OUTPUT_DATASETS,
Run.get_context().output_datasets, `${{outputs.<name>}}`). When the script exits 0 the runner uploads
what it holds to the output's datastore path and, with `register_as`, registers that path as a new
version of a file dataset, with the run's token: the version names the run that wrote it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from nimbus.datastore import Datastore
from nimbus.dataset import INPUTS_ENV as ENV, OUTPUTS_ENV, Dataset
from nimbus.exceptions import NimbusError
from nimbus.workspace import Workspace

FOLDER = Path(".nimbus") / "inputs"
OUTPUT_FOLDER = Path(".nimbus") / "outputs"
PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]{0,63})\}\}")


def materialise(config: Mapping[str, Any], workspace: Workspace, code_dir: Path,
                say: Callable[[str], None]) -> dict[str, dict]:
    """Every input of the run ready to read; returns what NIMBUS_INPUT_DATASETS holds."""
    ready = {}
    for entry in config.get("inputs") or []:
        name, mode = entry["name"], entry.get("mode", "download")
        dataset = Dataset.get_by_name(workspace, entry["dataset"], entry["version"])
        described = {"dataset": dataset.name, "version": dataset.version, "mode": mode, "type": dataset.kind}
        if dataset.fingerprint != entry.get("fingerprint", dataset.fingerprint):
            raise ValueError(f"input {name!r}: {dataset.id} is not the version the run was submitted with")
        if mode in ("download", "mount"):
            if mode == "mount":
                say(f"input {name}: {dataset.id} is downloaded, not mounted (no FUSE mount is made here)\n")
            target = code_dir / FOLDER / name
            cached = dataset.is_cached()
            dataset.download(target, overwrite=True, show_progress=False)
            described["path"] = str(target)
            count = dataset.details["file_count"]
            say(f"input {name}: {dataset.id} ({count} file{'' if count == 1 else 's'}) in {FOLDER / name}"
                f"{' (from the machine cache)' if cached else ''}\n")
        ready[name] = described
    return ready


def prepare_outputs(config: Mapping[str, Any], code_dir: Path) -> dict[str, dict]:
    """An empty folder for each output; returns what NIMBUS_OUTPUT_DATASETS holds."""
    ready = {}
    for entry in config.get("outputs") or []:
        folder = code_dir / OUTPUT_FOLDER / entry["name"]
        folder.mkdir(parents=True, exist_ok=True)
        ready[entry["name"]] = {"path": str(folder), "datastore": entry["datastore"], "destination": entry["path"],
                                "register_as": entry.get("register_as")}
    return ready


def deliver_outputs(outputs: Mapping[str, dict], workspace: Workspace, say: Callable[[str], None]) -> str | None:
    """Uploads each output folder and registers those to register; the problem, or None."""
    for name, entry in outputs.items():
        try:
            sent = Datastore(workspace, entry["datastore"]).upload(entry["path"], entry["destination"],
                                                                   overwrite=True, show_progress=False)
            say(f"output {name}: {len(sent)} file{'' if len(sent) == 1 else 's'} to "
                f"{entry['datastore']}:{entry['destination']}\n")
            if entry.get("register_as") and sent:
                made = Dataset.File.from_files((entry["datastore"], entry["destination"] + "/")).register(
                    workspace, entry["register_as"], create_new_version=True)
                say(f"output {name}: registered as {made.id}\n")
            elif entry.get("register_as"):
                say(f"output {name}: the script wrote nothing there, so no version of {entry['register_as']} "
                    "is registered\n")
        except NimbusError as err:
            return f"output {name} could not be delivered: {err}"
    return None


def substitute(argv: list[str], inputs: Mapping[str, dict], outputs: Mapping[str, dict]) -> list[str]:
    def value(match: re.Match) -> str:
        kind, name = match.group(1), match.group(2)
        found = (inputs if kind == "inputs" else outputs).get(name)
        if found is None:
            return match.group(0)
        return found.get("path") or f"{found['dataset']}:{found['version']}"

    return [PLACEHOLDER.sub(value, argument) for argument in argv]


def env_value(ready: Mapping[str, dict]) -> str:
    return json.dumps(ready, separators=(",", ":"))
