"""Logging and reading a run's metrics (the Run methods of Azure ML's tracking API)."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from nimbus import metrics_buffer
from nimbus.client import api_path
from nimbus.exceptions import InvalidError
from nimbus.metric_values import check_name, decode_non_finite, plain, scalar, shaped

if TYPE_CHECKING:
    from nimbus.workspace import Workspace

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "svg", "gif")
HISTORY_PAGE = 100_000


class RunMetrics:
    """Mixed into Run. Logging only buffers; a background thread sends (see nimbus.metrics_buffer)."""

    workspace: "Workspace"
    id: str

    def _init_metrics(self) -> None:
        self._metrics_path = api_path("workspaces", self.workspace.name, "runs", self.id, "metrics")
        self._metrics_key = (self.workspace.client.url, self.workspace.name, self.id)

    # --- logging ----------------------------------------------------------------------------------
    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        """Logs a number. Steps count up from 0 per metric unless given. Returns at once (buffered)."""
        if value.__class__ is not float:
            value = scalar(name, value)
        metrics_buffer.buffer().append(self._metrics_key, self.workspace.client, self._metrics_path,
                                       name, "scalar", value, step)

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        """Logs a list of values as one entry."""
        self._append(name, "list", _plain_list(name, value))

    def log_row(self, name: str, description: str = "", **kwargs: Any) -> None:
        """Logs one row (column=value, ...); get_metrics returns the rows as columns."""
        row = plain(kwargs, f"metric {name!r}")
        if not row or any(isinstance(v, (dict, list)) for v in row.values()):
            raise InvalidError(f"metric {name!r}: a row takes one or more column=scalar values")
        self._append(name, "row", row)

    def log_table(self, name: str, value: Mapping[str, Iterable[Any]], description: str = "") -> None:
        """Logs a table given as {column: [values, ...]}."""
        table = {str(k): _plain_list(name, v) for k, v in dict(value).items()}
        if not table:
            raise InvalidError(f"metric {name!r}: a table needs at least one column")
        self._append(name, "table", table)

    def log_image(self, name: str, path: str | os.PathLike | None = None, plot: Any = None,
                  description: str = "") -> None:
        """Uploads an image file, or a matplotlib figure (saved as PNG), and logs it as a metric."""
        if (path is None) == (plot is None):
            raise InvalidError("log_image takes either path or plot")
        if plot is not None:
            source: Any = io.BytesIO()
            plot.savefig(source, format="png")
            source.seek(0)
            extension = "png"
        else:
            source, extension = path, Path(path).suffix.lower().lstrip(".")
            if extension not in IMAGE_EXTENSIONS:
                raise InvalidError(f"image {str(path)!r} must be one of: {', '.join(IMAGE_EXTENSIONS)}")
        check_name(name)
        client = self.workspace.client
        upload = client.post(api_path("workspaces", self.workspace.name, "runs", self.id, "images"),
                             {"name": name, "extension": extension}, retry=True)
        client.upload(upload["url"], source)
        self._append(name, "image", {"path": upload["path"], "description": description})

    def flush(self, timeout: float | None = None) -> None:
        """Blocks until every metric this process logged to the run is stored.

        Raises the service's error (InvalidError, ConflictError, ...) when it refused some of them.
        """
        metrics_buffer.buffer().flush(self._metrics_key, timeout)

    def _append(self, name: str, kind: str, value: Any) -> None:
        metrics_buffer.buffer().append(self._metrics_key, self.workspace.client, self._metrics_path,
                                       name, kind, value)

    # --- reading ----------------------------------------------------------------------------------
    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        """{name: value}: one value alone, several as a list; rows become {column: values}.

        Flushes this process's buffered metrics of the run first, so they are included.
        """
        self.flush()
        summary = self.workspace.client.get(self._metrics_path)["metrics"]
        names = [n for n in ([name] if name is not None else summary) if n in summary]
        return {n: shaped(summary[n]["type"], self.get_metric_history(n)["values"]) for n in names}

    def get_metric_history(self, name: str) -> dict[str, Any]:
        """Every point of one metric: {name, type, values, steps, timestamps, ranks}, in logging order.

        `ranks` holds each point's rank in a distributed run (None for points logged outside one)."""
        client = self.workspace.client
        path = api_path("workspaces", self.workspace.name, "runs", self.id, "metric-history")
        params: dict[str, Any] = {"name": name, "max_results": HISTORY_PAGE}
        history: dict[str, Any] = {"name": name, "type": None, "values": [], "steps": [], "timestamps": [],
                                   "ranks": []}
        while True:
            page = client.get(path, **params)
            history["type"] = page["type"]
            for key in ("values", "steps", "timestamps"):
                history[key] += decode_non_finite(page[key])
            history["ranks"] += page.get("ranks") or [None] * len(page["values"])
            if not page.get("next_page_token"):
                return history
            params["page_token"] = page["next_page_token"]


def _plain_list(name: str, values: Any) -> list:
    """A JSON-ready list from any sequence, numpy array or iterable."""
    if not (isinstance(values, (list, tuple)) or hasattr(values, "tolist")):
        values = list(values)
    converted = plain(values, f"metric {name!r}")
    if not isinstance(converted, list):
        raise InvalidError(f"metric {name!r}: expected a sequence of values")
    return converted
