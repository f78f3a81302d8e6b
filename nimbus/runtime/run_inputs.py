"""A run's dataset inputs, made ready by the runner before the script starts (docs/datasets.md, "Inputs").

`download` and `mount` inputs: the version's files are fetched with the run's token into the machine's
dataset cache (keyed by the version's fingerprint, so a second run on the machine fetches 0 bytes) and
copied into `<working folder>/.nimbus/inputs/<name>/`, where the script may read them whatever its
sandbox (a copy: a script that writes there cannot change the cache). No FUSE mount is made: `mount`
is a download, which the run's log says. `direct` inputs are handed over as the dataset itself.

The script finds them in NIMBUS_INPUT_DATASETS ({name: {dataset, version, mode, type, path}}), which
Run.get_context().input_datasets reads, and `${{inputs.<name>}}` in its arguments becomes the folder
(or, for a direct input, `name:version`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from nimbus.dataset import INPUTS_ENV as ENV, Dataset
from nimbus.workspace import Workspace

FOLDER = Path(".nimbus") / "inputs"
PLACEHOLDER = re.compile(r"\$\{\{inputs\.([A-Za-z_][A-Za-z0-9_]{0,63})\}\}")


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


def substitute(argv: list[str], ready: Mapping[str, dict]) -> list[str]:
    def value(match: re.Match) -> str:
        found = ready.get(match.group(1))
        if found is None:
            return match.group(0)
        return found.get("path") or f"{found['dataset']}:{found['version']}"

    return [PLACEHOLDER.sub(value, argument) for argument in argv]


def env_value(ready: Mapping[str, dict]) -> str:
    return json.dumps(ready, separators=(",", ":"))
