"""Preparing time: a run naming an environment that is already built, against a run naming none.

    .venv/bin/python bench/prepare.py [--runs N]

Starts the local platform on a temporary NIMBUS_HOME, registers an environment with no requirements
(`Environment("bench-prepare")`, `pip_packages = []`: `python -m venv` and a `.pth` file, nothing
downloaded) and submits a one-line script naming it: that first run builds the virtualenv under
`<home>/envs/<hash>/`. Then it submits N (10) more runs naming the environment and N runs naming
none, alternately, each one after the previous has ended.

The service stores no time for the Preparing status (a run records `created`, `started` and `ended`;
`started` is set when the runner reports Running), so a run's preparing time here is `started` -
`created`, both from the server's clock: the worker starting the runner, the runner reading the run,
reporting Preparing, fetching the snapshot, preparing the environment, and reporting Running. The runs
naming no environment go through the same steps without the environment, so they are the baseline.

The environment must be built once: the build marker (`<hash>/nimbus-ready.json`) and the build log
are compared before and after the N runs, and the benchmark fails if either was rewritten, if another
environment folder appeared, if a run does not end Completed or if a script did not run in the
virtualenv it should. The figures are the last line of output, as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the SDK, installed or not

from _platform import emit, log, p50, percentile, platform_with_home, ratio, rounded  # noqa: E402

RUNS = 10
POLL_S = 0.02
RUN_TIMEOUT_S = 120.0  # the first run builds a virtualenv
ENVIRONMENT = "bench-prepare"
TERMINAL = ("Completed", "Failed", "Canceled")
# The script checks it runs where it should: inside <envs>/<hash> when named one, else anywhere.
SCRIPT = ('import sys\n'
          'expected = sys.argv[1]\n'
          'assert expected == "none" or sys.prefix.endswith(expected), f"{sys.prefix}, not {expected}"\n'
          'print("ok", sys.prefix)\n')


def epoch(iso: str) -> float:
    """The service's timestamps: ISO 8601 in UTC with milliseconds, e.g. 2024-06-01T12:00:00.123Z."""
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def follow(experiment, config, label: str) -> dict:
    """Submits once and polls until the run ends; its preparing time from the service's timestamps."""
    run = experiment.submit(config, tags={"bench": "prepare", "kind": label}, show_progress=False)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        details = run.get_details()
        if details["status"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run.id} is still {details['status']} after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    if details["status"] != "Completed":
        error = details.get("error") or {}
        raise AssertionError(f"{label} run {run.id} ended {details['status']}: {error.get('message')}")
    if not details.get("started"):
        raise AssertionError(f"run {run.id} completed without a started time")
    return {"id": run.id, "prepare": epoch(details["started"]) - epoch(details["created"]),
            "duration": details.get("duration_s")}


def marker_state(folder: Path) -> dict:
    """What a rebuild would change: the marker's and the build log's inode, mtime and content."""
    state = {}
    for path in (folder / "nimbus-ready.json", folder.parent / f"{folder.name}.build.log"):
        info = path.stat()
        state[path.name] = (info.st_ino, info.st_mtime_ns, info.st_size, path.read_bytes())
    return state


def measure(count: int) -> dict:
    from nimbus import Experiment, ScriptRunConfig, Workspace
    from nimbus.environment import Environment

    source = Path(tempfile.mkdtemp(prefix="nimbus-bench-prepare-"))
    (source / "main.py").write_text(SCRIPT)
    try:
        with platform_with_home() as (url, token, home):
            os.environ["NIMBUS_URL"], os.environ["NIMBUS_TOKEN"] = url, token
            workspace = Workspace.get("default")
            experiment = Experiment(workspace, "bench-prepare")
            definition = Environment(ENVIRONMENT)
            definition.pip_packages = []  # nothing to install: the venv and its .pth file only
            environment = definition.register(workspace)
            digest = environment.hash
            log(f"prepare: registered {environment.id} (hash {digest[:12]}), no requirements")
            with_env = ScriptRunConfig(source_directory=str(source), script="main.py", arguments=[digest],
                                       environment=environment)
            without = ScriptRunConfig(source_directory=str(source), script="main.py", arguments=["none"])

            envs = home / "envs"
            if (envs / digest).exists():
                raise AssertionError(f"{envs / digest} exists before the first run")
            first = follow(experiment, with_env, "first build")
            folder = envs / digest
            built = json.loads((folder / "nimbus-ready.json").read_text())
            log(f"prepare: first run (builds the venv) prepared in {first['prepare']:.3f} s; "
                f"the build itself took {built['build_seconds']} s")
            before, folders_before = marker_state(folder), sorted(p.name for p in envs.iterdir())

            samples: dict[str, list[dict]] = {"built": [], "none": []}
            for index in range(count):  # alternately, so both kinds see the same machine
                for label, config in (("built", with_env), ("none", without)):
                    sample = follow(experiment, config, label)
                    samples[label].append(sample)
                    log(f"prepare: {label:5s} run {index + 1}/{count}: prepared in {sample['prepare']:.3f} s")

            after, folders_after = marker_state(folder), sorted(p.name for p in envs.iterdir())
            rebuilt = before != after
            if rebuilt:
                changed = [name for name in before if before[name] != after[name]]
                raise AssertionError(f"the environment was built again: {', '.join(changed)} changed")
            if folders_after != folders_before:
                raise AssertionError(f"the environments folder changed: {folders_before} -> {folders_after}")
    finally:
        shutil.rmtree(source, ignore_errors=True)

    built_s = [s["prepare"] for s in samples["built"]]
    none_s = [s["prepare"] for s in samples["none"]]
    return {
        "first_build_prepare_s": rounded(first["prepare"]),
        "built_prepare_p50_s": rounded(p50(built_s)),
        "built_prepare_p90_s": rounded(percentile(built_s, 90)),
        "no_environment_prepare_p50_s": rounded(p50(none_s)),
        "no_environment_prepare_p90_s": rounded(percentile(none_s, 90)),
        "rebuilt": rebuilt,
        "built_vs_no_environment": ratio(p50(built_s), p50(none_s)),
        "built_extra_p50_s": rounded(p50(built_s) - p50(none_s)),
        "first_build_vs_no_environment": ratio(first["prepare"], p50(none_s)),
        "first_build_venv_s": built["build_seconds"],
        "runs_per_kind": count,
        "measured_as": "started - created (service timestamps, ms)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of each kind after the build (default {RUNS})")
    arguments = parser.parse_args()
    if arguments.runs < 1:
        parser.error("--runs must be at least 1")

    began = time.perf_counter()
    result: dict = {"benchmark": "prepare", "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    result.update(measure(arguments.runs))
    log(f"prepare: built environment p50 {result['built_prepare_p50_s']} s, no environment p50 "
        f"{result['no_environment_prepare_p50_s']} s, first build {result['first_build_prepare_s']} s")
    result["bench_seconds"] = round(time.perf_counter() - began, 1)
    emit(result)


if __name__ == "__main__":
    main()
