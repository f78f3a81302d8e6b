"""Batch scoring: run a registered model's entry script over a folder of input files, as a submitted run.

submit_batch_scoring() (on your machine) submits `python -m nimbus.batch_scoring …` as a run of the
source folder; main() (inside the job) downloads the model versions with the run's token, calls the
entry script's init() once and run(text) per input file, and writes one JSON line per file to the run's
outputs. The entry script is the same as a deployment's (see docs/models-and-endpoints.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Sequence

from nimbus.client import ApiClient
from nimbus.exceptions import InvalidError
from nimbus.experiment import Experiment, Run
from nimbus.model import Model
from nimbus.runconfig import ScriptRunConfig
from nimbus.workspace import Workspace

MODEL_DIR = "models"  # inside the job's folder: models/<name>/<version>/
OUTPUTS = "outputs"
REQUIRED_ENV = ("NIMBUS_URL", "NIMBUS_RUN_TOKEN", "NIMBUS_WORKSPACE", "NIMBUS_RUN_ID")
EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2


# --- submitting (client side) ------------------------------------------------------------------------
def submit_batch_scoring(experiment: "Experiment", model_refs: Sequence["str | Model"], entry_script: str,
                         source_directory: str | os.PathLike, inputs: str | os.PathLike, compute_target: str = "local",
                         output_file: str = "predictions.jsonl", tags: Mapping[str, str] | None = None,
                         continue_on_error: bool = False) -> "Run":
    """Submits a run that scores every file under `inputs` with the entry script's run().

    model_refs: Model objects or "name", "name:version", "name:alias" (pinned to a version number now,
    so the run says exactly what it scored with). The inputs travel in the run's snapshot, so they must
    sit inside source_directory (datastores come later). Predictions land in outputs/<output_file>.
    """
    source = Path(source_directory)
    if not source.is_dir():
        raise InvalidError(f"{str(source)!r} is not a folder", field="source_directory")
    inputs_rel = _inside(source, inputs, "inputs")
    if not (source / inputs_rel).is_dir():
        raise InvalidError(f"inputs {str(inputs)!r} is not a folder", field="inputs")
    script_rel = _inside(source, Path(source, entry_script) if not Path(entry_script).is_absolute() else entry_script,
                         "entry_script")
    if not (source / script_rel).is_file():
        raise InvalidError(f"entry_script {entry_script!r} is not a file in {str(source)!r}", field="entry_script")
    output = PurePosixPath(output_file)
    if output.is_absolute() or not output.parts or ".." in output.parts or "\\" in output_file:
        raise InvalidError(f"output_file {output_file!r} must be a relative path without '..'", field="output_file")
    if not model_refs:
        raise InvalidError("give at least one model", field="model_refs")
    pinned = [_pin(experiment.workspace, ref) for ref in model_refs]
    command = ["python", "-m", "nimbus.batch_scoring", "--models", *pinned, "--entry-script", script_rel,
               "--inputs", inputs_rel, "--output", f"{OUTPUTS}/{output.as_posix()}"]
    if continue_on_error:
        command.append("--continue-on-error")
    config = ScriptRunConfig(source_directory=source, command=command, compute_target=compute_target)
    return experiment.submit(config, tags=tags)


def _inside(root: Path, path: str | os.PathLike, field: str) -> str:
    """`path` (relative to root, or absolute) as a POSIX path relative to root; refuses anything outside."""
    candidate = Path(path) if Path(path).is_absolute() else root / path
    resolved, base = candidate.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise InvalidError(f"{field} {str(path)!r} must be inside the source folder {str(root)!r}: it travels in "
                           f"the run's snapshot (copy it in; datastores come later)", field=field)
    return resolved.relative_to(base).as_posix() or "."


def _pin(workspace, ref: "str | Model") -> str:
    if isinstance(ref, Model):
        return ref.id
    name, _, version = str(ref).partition(":")
    return Model(workspace, name, version or None).id


# --- scoring (inside the job) ------------------------------------------------------------------------
def download_models(workspace, refs: Sequence[str], root: Path) -> dict[str, dict[str, str]]:
    """Each version's files under root/<name>/<version>/, and the models.json index that get_model_path reads."""
    index: dict[str, dict[str, str]] = {}
    for ref in refs:
        name, _, version = ref.partition(":")
        model = Model(workspace, name, version or None)
        model.download(root / name / str(model.version), exist_ok=True, show_progress=False)
        index.setdefault(name, {})[str(model.version)] = model.asset_path
    root.mkdir(parents=True, exist_ok=True)
    (root / "models.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return index


def load_entry_script(path: Path) -> tuple[Callable[[], Any] | None, Callable[[str], Any]]:
    """(init or None, run) of the entry script, imported as a module with its folder on sys.path."""
    sys.path.insert(0, str(path.parent.resolve()))
    spec = importlib.util.spec_from_file_location("nimbus_entry_script", path)
    if spec is None or spec.loader is None:
        raise InvalidError(f"cannot import {str(path)!r}: not a Python file", field="entry_script")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = getattr(module, "run", None)
    if not callable(run):
        raise InvalidError(f"{str(path)!r} defines no run(raw_data) function", field="entry_script")
    init = getattr(module, "init", None)
    return (init if callable(init) else None), run


def score_files(run: Callable[[str], Any], inputs: Path, output: Path) -> tuple[int, int]:
    """Calls run(text) for each file under inputs (sorted, recursive); returns (scored, failed)."""
    files = sorted((p for p in inputs.rglob("*") if p.is_file()), key=lambda p: p.relative_to(inputs).as_posix())
    output.parent.mkdir(parents=True, exist_ok=True)
    scored = failed = 0
    with open(output, "w", encoding="utf-8") as stream:
        for file in files:
            relative = file.relative_to(inputs).as_posix()
            error = None
            try:
                result = run(file.read_text(encoding="utf-8"))
            except Exception as err:  # noqa: BLE001 - one bad input is reported, the others still scored
                error = f"{type(err).__name__}: {err}"
            else:
                try:
                    line = json.dumps({"file": relative, "result": result}, allow_nan=False)
                except (TypeError, ValueError):
                    error = f"run() returned {type(result).__name__}, which is not JSON-serialisable"
            if error is None:
                scored += 1
            else:
                line = json.dumps({"file": relative, "error": error})
                failed += 1
            stream.write(line + "\n")
    return scored, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nimbus.batch_scoring",
                                     description="Score every file of a folder with a registered model's entry script.")
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME:VERSION")
    parser.add_argument("--entry-script", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--output", default=f"{OUTPUTS}/predictions.jsonl")
    parser.add_argument("--continue-on-error", action="store_true", help="Exit 0 even when some inputs failed.")
    args = parser.parse_args(argv)
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print(f"batch scoring runs inside a submitted run: {', '.join(missing)} not set", file=sys.stderr)
        return EXIT_USAGE
    inputs = Path(args.inputs)
    if not inputs.is_dir():
        print(f"inputs {args.inputs!r} is not a folder", file=sys.stderr)
        return EXIT_USAGE

    workspace = Workspace(os.environ["NIMBUS_WORKSPACE"],
                          client=ApiClient(os.environ["NIMBUS_URL"], os.environ["NIMBUS_RUN_TOKEN"]))
    model_dir = Path(MODEL_DIR).resolve()
    index = download_models(workspace, args.models, model_dir)
    os.environ["NIMBUS_MODEL_DIR"] = str(model_dir)
    print(f"models: {', '.join(f'{n}:{v}' for n, versions in index.items() for v in versions)}", flush=True)

    init, run = load_entry_script(Path(args.entry_script))
    if init is not None:
        init()
    started = time.monotonic()
    scored, failed = score_files(run, inputs, Path(args.output))
    context = Run.get_context()
    context.log("scored", scored)
    context.log("failed", failed)
    context.flush()
    print(f"scored {scored} file(s), {failed} failed, in {time.monotonic() - started:.1f} s; "
          f"predictions in {args.output}", flush=True)
    return EXIT_FAILED_INPUTS if failed and not args.continue_on_error else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
