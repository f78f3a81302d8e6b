"""Tabular data read with pyarrow: delimited files (CSV, TSV …), Parquet and JSON Lines, and what a
dataset version keeps of it — its schema, row count, first rows and a profile of every column.

The profile is computed on Arrow's columns (pyarrow.compute), a few passes each, the columns in
parallel: min, max, mean (numbers), missing values, and the count of distinct values (exact: Arrow
hashes the column).
"""
from __future__ import annotations

import datetime
import decimal
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from chalicelib.errors import Invalid

FORMATS = ("delimited", "parquet", "json_lines")
ENCODINGS = ("utf8", "utf-8", "utf-16", "utf-16-le", "utf-16-be", "latin-1", "iso-8859-1", "cp1252", "ascii")
PREVIEW_ROWS = 10
MAX_CELL = 200  # characters of a text value kept in the preview
MAX_COLUMNS = 500
PROFILE_THREADS = os.cpu_count() or 2


def check_options(fmt: str, options: dict | None) -> dict:
    """The reading options of a format, completed with their defaults; unknown ones are refused."""
    if fmt not in FORMATS:
        raise Invalid(f"format must be one of {', '.join(FORMATS)}", field="format")
    options = dict(options or {})
    if fmt != "delimited":
        if options:
            raise Invalid(f"{fmt} takes no reading options", field=f"options.{sorted(options)[0]}")
        return {}
    unknown = set(options) - {"separator", "header", "encoding"}
    if unknown:
        raise Invalid(f"unknown option {sorted(unknown)[0]!r}: separator, header, encoding",
                      field=f"options.{sorted(unknown)[0]}")
    separator = options.get("separator", ",")
    if not isinstance(separator, str) or len(separator) != 1 or separator in "\r\n\"":
        raise Invalid("options.separator must be one character (not a quote or a line end)", field="options.separator")
    header = options.get("header", True)
    if not isinstance(header, bool):
        raise Invalid("options.header must be true or false", field="options.header")
    encoding = options.get("encoding", "utf8")
    if not isinstance(encoding, str) or encoding.lower() not in ENCODINGS:
        raise Invalid(f"options.encoding must be one of {', '.join(ENCODINGS)}", field="options.encoding")
    return {"separator": separator, "header": header, "encoding": encoding.lower()}


def read_table(data: "bytes | BinaryIO", fmt: str, options: dict, name: str) -> pa.Table:
    """One file (its bytes, or a stream of them) as an Arrow table; a file that does not parse is a 400
    naming it, the reader's words and, for a malformed CSV line, the line."""
    source = pa.BufferReader(data) if isinstance(data, bytes) else pa.PythonFile(data, mode="r")
    try:
        if fmt == "parquet":
            return pq.read_table(source)
        if fmt == "json_lines":
            return pa_json.read_json(source)
        encoding = options["encoding"]
        read = pa_csv.ReadOptions(encoding="utf8" if encoding in ("utf8", "utf-8") else encoding,
                                  autogenerate_column_names=not options["header"])
        table = pa_csv.read_csv(source, read_options=read, parse_options=pa_csv.ParseOptions(
            delimiter=options["separator"]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError, LookupError) as err:
        field = "options.encoding" if "UTF8" in str(err) or isinstance(err, UnicodeDecodeError) else "paths"
        raise Invalid(f"{name} cannot be read as {fmt}: {_first_line(str(err))}{_line_of(data, str(err))}",
                      field=field) from None
    # Text that is not valid in the encoding stays bytes (Arrow's binary type) instead of failing.
    undecoded = [f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    if undecoded:
        raise Invalid(f"{name}: column {undecoded[0]!r} is not valid {options['encoding']} text; give the files' "
                      "encoding (options.encoding)", field="options.encoding")
    return table


def combine(tables: list[tuple[str, pa.Table]]) -> pa.Table:
    """The files' tables as one; every file must have the first one's columns."""
    first_name, first = tables[0]
    for name, table in tables[1:]:
        if table.schema.names != first.schema.names:
            raise Invalid(f"{name} has columns {table.schema.names}, {first_name} has {first.schema.names}: "
                          "the files of a tabular dataset share their columns", field="paths")
    try:
        return pa.concat_tables([t for _, t in tables], promote_options="permissive")
    except pa.ArrowInvalid as err:
        raise Invalid(f"the files' column types differ: {_first_line(str(err))}", field="paths") from None


def describe(table: pa.Table) -> dict:
    """schema, row_count, preview and profile: what a dataset version keeps of its data."""
    if table.num_columns > MAX_COLUMNS:
        raise Invalid(f"the data has {table.num_columns} columns; a tabular dataset takes at most {MAX_COLUMNS}",
                      field="paths")
    head = table.slice(0, PREVIEW_ROWS)
    # Arrow's kernels release the GIL: the columns are profiled side by side, one per core.
    with ThreadPoolExecutor(max_workers=min(PROFILE_THREADS, table.num_columns or 1)) as pool:
        profiles = list(pool.map(profile_column, table.columns))
    return {
        "schema": [{"name": field.name, "type": str(field.type)} for field in table.schema],
        "row_count": table.num_rows,
        "preview": {"columns": table.schema.names,
                    "rows": [[_plain(value) for value in row.values()] for row in head.to_pylist()]},
        "profile": [{"name": name, **profile} for name, profile in zip(table.schema.names, profiles)],
    }


def profile_column(column: pa.ChunkedArray) -> dict:
    kind = column.type
    profile: dict[str, Any] = {"type": str(kind), "missing": column.null_count,
                               "distinct": pc.count_distinct(column, mode="only_valid").as_py()}
    if pa.types.is_floating(kind):
        profile["missing"] += pc.sum(pc.is_nan(column)).as_py() or 0
    if _ordered(kind) and column.null_count < len(column):
        extremes = pc.min_max(column)
        profile["min"], profile["max"] = _plain(extremes["min"].as_py()), _plain(extremes["max"].as_py())
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)) \
            and column.null_count < len(column):
        profile["mean"] = _plain(pc.mean(column).as_py())
    return profile


def _ordered(kind: pa.DataType) -> bool:
    return (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
            or pa.types.is_temporal(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_boolean(kind))


def _plain(value: Any) -> Any:
    """A value as JSON holds it: NaN and infinities become null, dates ISO text, long text cut."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value[:MAX_CELL].hex()
    if isinstance(value, str):
        return value[:MAX_CELL]
    if isinstance(value, (list, dict)):
        return str(value)[:MAX_CELL]
    return value


def _line_of(data: "bytes | BinaryIO", message: str) -> str:
    """' (line N)' for a CSV parse error, whose message ends with the offending row's text."""
    _, found, row = message.partition(": ")
    row = row.rsplit(": ", 1)[-1].strip() if found and "Expected" in message else ""
    if not row:
        return ""
    if not isinstance(data, bytes):
        try:
            data.seek(0)
        except (AttributeError, OSError, ValueError):
            return ""  # a stream read once (S3's): the row's text names the line
        lines = data
    else:
        lines = io.BytesIO(data)
    for number, line in enumerate(lines, start=1):
        if line.rstrip(b"\r\n").decode("utf8", "replace") == row:
            return f" (line {number})"
    return ""


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:500] if message.strip() else "unreadable"
