"""Snapshot upload on submit: a 2,000-file, 50 MiB folder submitted, then submitted again unchanged.

    .venv/bin/python bench/snapshot.py

Starts the local platform on a temporary NIMBUS_HOME, writes a source folder of 2,000 files (a
trivial main.py and 1,999 files of random bytes from a fixed seed, in a few sub-folders; 50 MiB in
all) and submits it twice with `Experiment.submit(ScriptRunConfig(source_directory=..., script="main.py"))`,
letting each run finish before the next submission. It measures:

- first_s / second_s: the time of the submit() call, which returns the run Queued: hashing the
  folder, asking the service which contents it lacks, uploading those, registering the manifest and
  creating the run;
- first_bytes / second_bytes: the bytes the SDK sent for the snapshot, as returned by
  nimbus.snapshot.upload() during that submit() call. The second submission changes nothing, so it
  must send 0 bytes (else the benchmark fails) and get the same snapshot id;
- first_run_s / second_run_s: from submit() returning until a poll (every 100 ms) sees the run
  Completed, which includes the runner fetching the 2,000 files. Both runs must complete.

The figures are the last line of output, as one JSON object.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the SDK, installed or not

from _platform import emit, log, nimbus_platform  # noqa: E402

FILES = 2_000  # main.py included; the SDK's default limit (NIMBUS_SNAPSHOT_MAX_FILES) is 2,000
TOTAL_BYTES = 50 * 1024 * 1024  # main.py included
SEED = 20240601
FOLDERS = ("data/train", "data/valid", "data/test", "models", "src/lib", "src/lib/extra", "assets")
MAIN = 'print("snapshot benchmark")\n'
TERMINAL = ("Completed", "Failed", "Canceled")
RUN_TIMEOUT_S = 120.0


def write_folder(root: Path) -> int:
    """FILES files of TOTAL_BYTES in all under `root`, the same every time; returns the bytes written."""
    rng = random.Random(SEED)
    (root / "main.py").write_text(MAIN)
    count, budget = FILES - 1, TOTAL_BYTES - len(MAIN)
    weights = [rng.uniform(0.2, 1.8) for _ in range(count)]  # sizes vary around 26 KiB
    scale = budget / sum(weights)
    sizes = [int(weight * scale) for weight in weights]
    sizes[-1] += budget - sum(sizes)
    written = len(MAIN)
    for index, size in enumerate(sizes):
        folder = root / FOLDERS[index % len(FOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"part-{index:04d}.bin").write_bytes(rng.randbytes(size))
        written += size
    return written


class UploadProbe:
    """Keeps what nimbus.snapshot.collect() and upload() return, and their times, during submit()."""

    def __init__(self):
        from nimbus import snapshot

        self.module = snapshot
        self.original_collect, self.original_upload = snapshot.collect, snapshot.upload
        self.collect_s = self.upload_s = 0.0
        self.result: dict | None = None

    def __enter__(self) -> "UploadProbe":
        def collect(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.original_collect(*args, **kwargs)
            finally:
                self.collect_s = time.perf_counter() - start

        def upload(*args, **kwargs):
            start = time.perf_counter()
            self.result = self.original_upload(*args, **kwargs)
            self.upload_s = time.perf_counter() - start
            return self.result

        self.module.collect, self.module.upload = collect, upload
        return self

    def __exit__(self, *exc) -> None:
        self.module.collect, self.module.upload = self.original_collect, self.original_upload


def wait_until_ended(run) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        status = run.get_details()["status"]
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run.id} is still {status} after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def measure_nimbus() -> dict:
    from nimbus import Experiment, ScriptRunConfig, Workspace

    source = Path(tempfile.mkdtemp(prefix="nimbus-bench-snapshot-"))
    try:
        log(f"snapshot: writing {FILES:,} files, {TOTAL_BYTES / 2**20:.0f} MiB, to {source}")
        written = write_folder(source)
        with nimbus_platform() as (url, token):
            os.environ["NIMBUS_URL"], os.environ["NIMBUS_TOKEN"] = url, token
            experiment = Experiment(Workspace.get("default"), "bench-snapshot")
            config = ScriptRunConfig(source_directory=str(source), script="main.py")
            figures = []
            for attempt in ("first", "second"):
                with UploadProbe() as probe:
                    start = time.perf_counter()
                    run = experiment.submit(config, tags={"bench": "snapshot"}, show_progress=False)
                    seconds = time.perf_counter() - start
                if probe.result is None:
                    raise AssertionError("submit() did not go through nimbus.snapshot.upload()")
                if run.details.get("status") != "Queued":
                    raise AssertionError(f"submit() returned run {run.id} {run.details.get('status')}, not Queued")
                log(f"snapshot: {attempt} submit {seconds:.2f} s, {probe.result['uploaded_bytes']:,} bytes sent")
                queued = time.perf_counter()
                status = wait_until_ended(run)
                run_s = time.perf_counter() - queued
                if status != "Completed":
                    error = run.details.get("error") or {}
                    raise AssertionError(f"the {attempt} run ended {status}: {error.get('message')}")
                figures.append({"seconds": seconds, "collect_s": probe.collect_s, "upload_s": probe.upload_s,
                                "run_s": run_s, **probe.result,
                                "snapshot_id": run.details.get("snapshot_id")})
    finally:
        shutil.rmtree(source, ignore_errors=True)

    first, second = figures
    if second["uploaded_bytes"] != 0:
        raise AssertionError(f"the unchanged folder was uploaded again: {second['uploaded_bytes']:,} bytes sent, not 0")
    if second["snapshot_id"] != first["snapshot_id"] or second["id"] != first["id"]:
        raise AssertionError(f"the unchanged folder got another snapshot: {second['id']} after {first['id']}")
    if (first["file_count"], first["total_bytes"]) != (FILES, written):
        raise AssertionError(f"the snapshot holds {first['file_count']} files, {first['total_bytes']:,} bytes; "
                             f"the folder has {FILES} files, {written:,} bytes")
    if first["uploaded_bytes"] != written:
        raise AssertionError(f"the first submit sent {first['uploaded_bytes']:,} bytes of {written:,}")
    return {
        "file_count": first["file_count"],
        "total_bytes": first["total_bytes"],
        "first_bytes": first["uploaded_bytes"],
        "second_bytes": second["uploaded_bytes"],
        "first_s": round(first["seconds"], 3),
        "second_s": round(second["seconds"], 3),
        "first_hash_s": round(first["collect_s"], 3),
        "first_upload_s": round(first["upload_s"], 3),
        "second_hash_s": round(second["collect_s"], 3),
        "second_upload_s": round(second["upload_s"], 3),
        "first_mib_per_s": round(first["uploaded_bytes"] / 2**20 / first["seconds"], 1),
        "first_run_s": round(first["run_s"], 2),
        "second_run_s": round(second["run_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()

    began = time.perf_counter()
    result: dict = {"benchmark": "snapshot", "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    result["nimbus"] = nimbus = measure_nimbus()
    log(f"nimbus: first submit {nimbus['first_s']} s ({nimbus['first_bytes']:,} bytes), "
        f"second {nimbus['second_s']} s ({nimbus['second_bytes']} bytes)")
    result["bench_seconds"] = round(time.perf_counter() - began, 1)
    emit(result)


if __name__ == "__main__":
    main()
