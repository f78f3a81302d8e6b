"""Datasets: registering 10,000 files against listing them, profiling 1,000,000 rows against reading them
with pyarrow, and a second download of an unchanged dataset.

    .venv/bin/python bench/datasets.py [--files 10000] [--rows 1000000]

Starts the local platform on a temporary NIMBUS_HOME, with one datastore root (NIMBUS_DATASTORE_ROOTS)
in which it writes the data, and registers a local datastore over it. It measures, best of --repeat:

- list_s: listing the 10,000 files through the API (`Datastore.list_files`, pages of 1,000), against
  register_s: registering them as a FileDataset (one listing, the fingerprint, the manifest), each time
  as a new version (a file is touched between registrations, so each is a new fingerprint).
  Goal: register_s / list_s at most 1.5.
- read_s: pyarrow.csv.read_csv of the 1,000,000-row, 10-column CSV in this process, against
  profile_s: registering it as a TabularDataset (the service reads it, takes its schema, rows, preview
  and the profile of every column). Goal: profile_s / read_s at most 2.
- first_bytes / second_bytes: the bytes the SDK fetched for two downloads of one FileDataset version on
  this machine. Goal: second_bytes 0.

The figures are the last line of output, as one JSON object; the exit status is 1 when a goal fails.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the SDK, installed or not

from _platform import emit, log, platform_with_home, ratio, rounded  # noqa: E402

SEED = 20261204


def write_files(folder: Path, count: int) -> None:
    for index in range(count):
        part = folder / f"shard-{index % 20:02d}"
        part.mkdir(parents=True, exist_ok=True)
        (part / f"file-{index:05d}.json").write_text(f'{{"index": {index}}}\n')


def write_csv(path: Path, rows: int) -> None:
    import numpy
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rng = numpy.random.default_rng(SEED)
    columns = {f"num_{n}": rng.normal(size=rows).round(4) for n in range(6)}
    columns.update({f"int_{n}": rng.integers(0, 1000, size=rows) for n in range(2)})
    columns["label"] = pa.array(rng.choice(["setosa", "versicolor", "virginica"], size=rows))
    columns["flag"] = rng.integers(0, 2, size=rows).astype(bool)
    pa_csv.write_csv(pa.table(columns), path)


def best(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nimbus-bench-data-"))
    try:
        return measure(arguments, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(arguments: argparse.Namespace, root: Path) -> int:
    import pyarrow.csv as pa_csv

    from nimbus import Dataset, Datastore, Workspace

    os.environ["NIMBUS_DATASTORE_ROOTS"] = str(root)
    os.environ["NIMBUS_CACHE_DIR"] = str(root / "client-cache")
    log(f"writing {arguments.files:,} files and a {arguments.rows:,}-row CSV under {root}")
    write_files(root / "data" / "many", arguments.files)
    write_csv(root / "data" / "table.csv", arguments.rows)
    csv_bytes = (root / "data" / "table.csv").stat().st_size

    with platform_with_home() as (url, token, _home):
        workspace = Workspace("default", url, token)
        store = Datastore.register_local(workspace, "bench", str(root / "data"))

        log("listing and registering the files")
        touched = iter(range(10 ** 6))
        list_s = best(lambda: store.list_files("many/"), arguments.repeat)

        def register_files():
            (root / "data" / "many" / "shard-00" / "file-00000.json").write_text(f'{{"touch": {next(touched)}}}\n')
            Dataset.File.from_files((store, "many/")).register(workspace, "many", create_new_version=True)

        register_s = best(register_files, arguments.repeat)
        versions = len(Dataset.versions(workspace, "many"))

        log("reading and profiling the table")
        read_s = best(lambda: pa_csv.read_csv(root / "data" / "table.csv"), arguments.repeat)

        def register_table():
            (root / "data" / "table.csv").touch()  # a new mtime: a new fingerprint, so it is read again
            Dataset.Tabular.from_delimited_files((store, "table.csv")).register(workspace, "table",
                                                                                 create_new_version=True)

        profile_s = best(register_table, arguments.repeat)
        rows = Dataset.get_by_name(workspace, "table").row_count

        log("downloading one version twice")
        moved: list[int] = []
        download = workspace.client.download
        workspace.client.download = lambda url, target, progress=None: moved.append(download(url, target)) or moved[-1]
        small = Dataset.get_by_name(workspace, "many", 1)
        small.download(root / "copy-1")
        first_bytes = sum(moved)
        moved.clear()
        small.download(root / "copy-2")
        second_bytes = sum(moved)

    register_ratio, profile_ratio = ratio(register_s, list_s), ratio(profile_s, read_s)
    ok = (register_ratio is not None and register_ratio <= 1.5 and profile_ratio is not None
          and profile_ratio <= 2.0 and second_bytes == 0 and first_bytes > 0 and rows == arguments.rows
          and versions == arguments.repeat)
    emit({"benchmark": "datasets", "files": arguments.files, "rows": arguments.rows, "csv_bytes": csv_bytes,
          "list_s": rounded(list_s), "register_s": rounded(register_s), "register_over_list": register_ratio,
          "read_s": rounded(read_s), "profile_s": rounded(profile_s), "profile_over_read": profile_ratio,
          "first_bytes": first_bytes, "second_bytes": second_bytes, "ok": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
