"""docs/api.md's table of every route is the OpenAPI document's, as `make api-docs` writes it."""
import pytest

import chalicelib.api.app  # noqa: F401 - the app declares every route
from chalicelib.api.openapi import document
from chalicelib.api.route_table import BEGIN, DOCS, END, markdown, rewrite
from chalicelib.api.routing import ROUTES


def test_the_committed_routes_table_is_the_documents():
    text = DOCS.read_text()
    assert rewrite(text, markdown(document())) == text, "docs/api.md's routes table is stale: run `make api-docs`"


def test_the_table_has_a_row_for_every_method_of_every_route():
    table = markdown(document())
    for spec in ROUTES:
        for method in spec.methods:
            assert f"| {method} | `{spec.path}` |" in table


def test_rewriting_replaces_only_the_table_and_needs_both_markers():
    assert rewrite(f"intro\n{BEGIN}\nold\n{END}\nafter\n", "new") == f"intro\n{BEGIN}\nnew\n{END}\nafter\n"
    with pytest.raises(ValueError):
        rewrite("no markers here", "new")
