"""OfflineRun: what Run.get_context() gives a script started by hand, outside any submitted run.

It has Run's logging methods, so the same script runs both ways. Nothing leaves the process: each
call prints one short line, metrics stay in memory (get_metrics returns them), and file operations
never raise for I/O. Values are still checked as a live run checks them, so a mistake shows up here
rather than only after submitting.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping

from nimbus.exceptions import ConfigurationError, InvalidError
from nimbus.metric_values import check_name, plain, scalar, shaped
from nimbus.run_metrics import IMAGE_EXTENSIONS, _plain_list

MAX_SHOWN = 80  # characters of a value printed


class OfflineRun:
    @property
    def input_datasets(self) -> dict[str, Any]:
        """None outside a submitted run: a script takes its data's path from its arguments, the argument a
        submitted run gets its input's folder in (`${{inputs.<name>}}`)."""
        return {}

    @property
    def output_datasets(self) -> dict[str, str]:
        """None outside a submitted run: a script takes where to write from its arguments."""
        return {}

    def __init__(self, name: str | None = None, parent: "OfflineRun | None" = None):
        self._id = f"OfflineRun_{uuid.uuid4()}"
        self._display_name = name or self._id
        self._parent = parent
        self._status = "Running"
        self._tags: dict[str, str] = {}
        self._properties: dict[str, str] = {}
        self._metrics: dict[str, tuple[str, list]] = {}  # name -> (kind, values)
        self._files: list[str] = []
        self._children: list[OfflineRun] = []
        self._error: dict | None = None

    # --- what the run is ----------------------------------------------------------------------------
    workspace = None
    experiment = None

    @property
    def id(self) -> str:
        return self._id

    @property
    def status(self) -> str:
        return self._status

    @property
    def display_name(self) -> str:
        return self._display_name

    @property
    def parent(self) -> "OfflineRun | None":
        return self._parent

    @property
    def tags(self) -> dict:
        return dict(self._tags)

    @property
    def properties(self) -> dict:
        return dict(self._properties)

    def get_details(self) -> dict:
        return {"id": self._id, "display_name": self._display_name, "status": self._status, "tags": self.tags,
                "properties": self.properties, "parent_id": self._parent.id if self._parent else None,
                "error": self._error}

    @property
    def details(self) -> dict:
        return self.get_details()

    def get_status(self) -> str:
        return self._status

    def get_tags(self) -> dict:
        return self.tags

    def get_properties(self) -> dict:
        return self.properties

    # --- metrics ------------------------------------------------------------------------------------
    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        self._record(name, "scalar", scalar(name, value), f"{name} = {_short(value)}")

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        values = _plain_list(name, value)
        self._record(name, "list", values, f"{name} = {_short(values)}")

    def log_row(self, name: str, description: str = "", **kwargs: Any) -> None:
        row = plain(kwargs, f"metric {name!r}")
        if not row or any(isinstance(v, (dict, list)) for v in row.values()):
            raise InvalidError(f"metric {name!r}: a row takes one or more column=scalar values")
        self._record(name, "row", row, f"{name} row {_short(row)}")

    def log_table(self, name: str, value: Mapping[str, Iterable[Any]], description: str = "") -> None:
        table = {str(k): _plain_list(name, v) for k, v in dict(value).items()}
        if not table:
            raise InvalidError(f"metric {name!r}: a table needs at least one column")
        self._record(name, "table", table, f"{name} table of columns {_short(list(table))}")

    def log_image(self, name: str, path: str | os.PathLike | None = None, plot: Any = None,
                  description: str = "") -> None:
        if (path is None) == (plot is None):
            raise InvalidError("log_image takes either path or plot")
        if path is not None and Path(path).suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS:
            raise InvalidError(f"image {str(path)!r} must be one of: {', '.join(IMAGE_EXTENSIONS)}")
        shown = "a figure" if plot is not None else str(path)
        self._record(name, "image", {"path": shown, "description": description}, f"{name} image {shown}")

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        names = [name] if name is not None else list(self._metrics)
        return {n: shaped(*self._metrics[n]) for n in names if n in self._metrics}

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to send."""

    def _record(self, name: str, kind: str, value: Any, shown: str) -> None:
        check_name(name)
        known_kind, values = self._metrics.setdefault(name, (kind, []))
        if known_kind != kind:
            raise InvalidError(f"metric {name!r} is a {known_kind} metric; it cannot take {kind} values", field="name")
        values.append(value)
        _say(f"log {shown}")

    # --- tags and properties --------------------------------------------------------------------------
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        _say(f"tags {_short(dict(tags or {}))}")

    def tag(self, key: str, value: Any = "") -> None:
        self.set_tags({key: value})

    def remove_tags(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key in keys:
            self._tags.pop(key, None)
        _say(f"remove tags {_short(keys)}")

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        self._properties.update({str(k): str(v) for k, v in (properties or {}).items()})
        _say(f"properties {_short(dict(properties or {}))}")

    # --- files and logs -----------------------------------------------------------------------------
    def upload_file(self, name: str, path_or_stream: str | os.PathLike | BinaryIO,
                    show_progress: bool | None = None) -> dict:
        size = _size(path_or_stream)
        self._files.append(name)
        _say(f"upload {name} ({'missing' if size is None else f'{size} bytes'})")
        return {"path": name, "size": size or 0}

    def upload_folder(self, name: str, path: str | os.PathLike, show_progress: bool | None = None) -> list[dict]:
        root, prefix = Path(path), name.strip("/")
        try:
            files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        except OSError:
            files = []
        uploaded = []
        for file in files:
            relative = file.relative_to(root).as_posix()
            target = f"{prefix}/{relative}" if prefix else relative
            self._files.append(target)
            uploaded.append({"path": target, "size": _size(file) or 0})
        _say(f"upload folder {path} as {prefix or '.'}/ ({len(uploaded)} files)")
        return uploaded

    def get_file_names(self, prefix: str = "") -> list[str]:
        return sorted(f for f in self._files if f.startswith(prefix))

    def append_log(self, text: str, stream: str = "stdout") -> None:
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)

    # --- secrets ------------------------------------------------------------------------------------
    def get_secret(self, name: str) -> str:
        """Secrets are given to submitted runs only: started by hand, a script has no run to read them."""
        raise ConfigurationError(f"secret {name!r}: secrets are read by submitted runs only (this script was "
                                 "started by hand, outside a run)")

    def get_secrets(self, secrets: Iterable[str]) -> dict[str, str]:
        return {name: self.get_secret(name) for name in secrets}

    # --- children -----------------------------------------------------------------------------------
    def child_run(self, name: str | None = None, tags: Mapping[str, Any] | None = None,
                  properties: Mapping[str, Any] | None = None) -> "OfflineRun":
        child = OfflineRun(name, parent=self)
        child._tags = {str(k): str(v) for k, v in (tags or {}).items()}
        child._properties = {str(k): str(v) for k, v in (properties or {}).items()}
        self._children.append(child)
        _say(f"child run {child.display_name}")
        return child

    def get_children(self, recursive: bool = False) -> list["OfflineRun"]:
        found = list(self._children)
        if recursive:
            for child in self._children:
                found += child.get_children(recursive=True)
        return found

    # --- ending -------------------------------------------------------------------------------------
    def complete(self) -> None:
        self._end("Completed")

    def fail(self, error_details: Any = None, error_code: str | None = None) -> None:
        message = "the run failed" if error_details is None else str(error_details) or type(error_details).__name__
        self._error = {"message": message}
        if error_code:
            self._error["code"] = error_code
        self._end("Failed", f": {_short(self._error['message'])}")

    def cancel(self) -> None:
        self._end("Canceled")

    def wait_for_completion(self, show_output: bool = False, **ignored: Any) -> dict:
        return self.get_details()

    def _end(self, status: str, why: str = "") -> None:
        self._status = status
        _say(f"{self._display_name} {status}{why}")

    def __enter__(self) -> "OfflineRun":
        return self

    def __exit__(self, kind, error, trace) -> None:
        self.complete() if error is None else self.fail(error)

    def __repr__(self) -> str:
        return f"OfflineRun(id={self._id!r}, status={self._status!r})"


def _size(source: Any) -> int | None:
    if not isinstance(source, (str, os.PathLike)):
        return None if source is None else 0
    try:
        return os.path.getsize(source)
    except OSError:
        return None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def _say(message: str) -> None:
    try:
        print(f"[offline run] {message}", flush=True)
    except (OSError, ValueError):
        pass  # a closed stdout must not break the script
