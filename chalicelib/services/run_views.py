"""What the API shows of a stored run: its summary in listings, its full view on its own."""
from __future__ import annotations


def run_summary(item: dict) -> dict:
    return {k: item.get(k) for k in ("id", "experiment", "display_name", "status", "created", "started", "ended",
                                      "duration_s", "submitted_by", "parent_id", "tags", "metrics")}


def run_view(item: dict, children: dict[str, int] | None = None) -> dict:
    view = run_summary(item)
    view.update({k: item.get(k) for k in ("properties", "error", "root_id", "depth", "metric_types", "snapshot_id",
                                          "run_config", "git", "ci", "compute_target", "job", "attempt",
                                          "runner_id")})
    view["attempts"] = item.get("attempts") or []
    view["children"] = children or {}
    return view
