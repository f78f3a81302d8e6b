"""Printing results: stable JSON for programs, aligned plain-text tables for people."""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence, Union

import click

from nimbus.metric_values import encode_non_finite

Column = tuple[str, Union[str, Callable[[dict], Any]]]  # header, and the key or function giving the cell
MAX_CELL = 60


def print_json(data: Any) -> None:
    click.echo(json.dumps(encode_non_finite(data), indent=2, sort_keys=True, allow_nan=False, default=str))


def print_table(rows: Sequence[dict], columns: Sequence[Column]) -> None:
    headers = [header for header, _ in columns]
    cells = [[cell_text(_cell(row, getter)) for _, getter in columns] for row in rows]
    widths = [max([len(h)] + [len(line[i]) for line in cells]) for i, h in enumerate(headers)]
    for line in [headers] + cells:
        click.echo("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip())


def print_record(record: dict, keys: Sequence[str] | None = None) -> None:
    """One object as `key: value` lines."""
    keys = list(keys) if keys is not None else list(record)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        click.echo(f"{key + ':':<{width + 1}} {cell_text(record.get(key), limit=None)}".rstrip())


def emit(output: str, data: Any, columns: Sequence[Column] | None = None, keys: Sequence[str] | None = None) -> None:
    """JSON as it is; otherwise a table for a list, `key: value` lines for an object."""
    if output == "json":
        print_json(data)
    elif isinstance(data, list):
        print_table(data, columns or [(k.upper(), k) for k in (data[0] if data else {})])
    elif isinstance(data, dict):
        print_record(data, keys)
    else:
        click.echo(cell_text(data, limit=None))


def cell_text(value: Any, limit: int | None = MAX_CELL) -> str:
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = number_text(value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={cell_text(v, None)}" for k, v in value.items())
    elif isinstance(value, list):
        text = "[" + ", ".join(cell_text(v, None) for v in value) + "]"
    else:
        text = str(value)
    text = " ".join(text.split())  # one line per row, whatever the value holds
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def number_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return f"{value:.6g}"


def _cell(row: dict, getter: str | Callable[[dict], Any]) -> Any:
    return getter(row) if callable(getter) else row.get(getter)
