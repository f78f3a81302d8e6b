"""Tabular files on this machine read with pyarrow as their dataset says (format and options), and the
row transforms of take, skip and random_split."""
from __future__ import annotations

from pathlib import Path

from nimbus.exceptions import InvalidError

try:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq
except ImportError:  # the SDK's tabular data needs its extra
    raise InvalidError("tabular datasets need pyarrow and pandas: pip install 'nimbus-ml[datasets]'") from None


def read(files: list[Path], fmt: str, options: dict):
    tables = [_read_one(path, fmt, options) for path in files]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def _read_one(path: Path, fmt: str, options: dict):
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "json_lines":
        return pa_json.read_json(path)
    encoding = options.get("encoding", "utf8")
    read_options = pa_csv.ReadOptions(encoding="utf8" if encoding in ("utf8", "utf-8") else encoding,
                                      autogenerate_column_names=not options.get("header", True))
    return pa_csv.read_csv(path, read_options=read_options,
                           parse_options=pa_csv.ParseOptions(delimiter=options.get("separator", ",")))


def transform(table, step: tuple):
    """take N, skip N, or one side of a seeded split (each row kept with probability `percentage`)."""
    if step[0] == "take":
        return table.slice(0, step[1])
    if step[0] == "skip":
        return table.slice(step[1])
    _, percentage, seed, first = step
    import numpy  # here: comes with pyarrow's pandas conversion

    chosen = numpy.random.default_rng(seed).random(table.num_rows) < percentage
    return table.filter(pa.array(chosen if first else ~chosen))
