"""Experiments: named groups of runs inside a workspace, created by the first run that names them."""
from __future__ import annotations

from chalicelib.errors import NotFound
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.validation import check_experiment_name, check_page_size, decode_page_token, encode_page_token, start_key
from chalicelib.store.table import Query, Update


class Experiments:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def upsert_for_new_run(self, workspace: str, name: str, user: str) -> Update:
        """The write that creates the experiment if needed and counts one more run (in the run's transaction)."""
        key = table_keys.experiment(workspace, name)
        return Update(key, set_if_absent={"entity": "experiment", "name": name, "workspace": workspace,
                                          "created": self.ctx.now(), "created_by": user},
                      set={"last_run": self.ctx.now()}, add={"run_count": 1})

    def get(self, workspace: str, name: str) -> dict:
        check_experiment_name(name)
        item = self.ctx.table.get_item(table_keys.experiment(workspace, name))
        if item is None:
            raise NotFound(f"experiment {name!r} not found in workspace {workspace!r}")
        return experiment_view(item)

    def list(self, workspace: str, max_results: int = 100, page_token: str | None = None) -> dict:
        check_page_size(max_results)
        state = decode_page_token(page_token)
        page = self.ctx.table.query(Query(table_keys.workspace_pk(workspace), sk_prefix="EXP#", limit=max_results,
                                          start=start_key(state, pk=table_keys.workspace_pk(workspace))))
        return {"experiments": [experiment_view(i) for i in page.items],
                "next_page_token": encode_page_token({"k": page.next}) if page.next else None}


def experiment_view(item: dict) -> dict:
    return {"name": item["name"], "created": item["created"], "created_by": item.get("created_by"),
            "run_count": item.get("run_count", 0), "last_run": item.get("last_run")}
