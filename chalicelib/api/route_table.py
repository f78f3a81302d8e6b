"""The table of every route in docs/api.md, written from the OpenAPI document (api/openapi.py).

`python -m chalicelib.api.route_table` (or `make api-docs`) rewrites the table between the two markers
in docs/api.md; tests/server/api/test_route_table.py fails while the committed table differs.
"""
from __future__ import annotations

import sys
from pathlib import Path

from chalicelib.api.openapi import document

BEGIN, END = "<!-- routes: begin (written by `make api-docs`) -->", "<!-- routes: end -->"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_METHODS = ("get", "post", "put", "patch", "delete")


def markdown(doc: dict) -> str:
    lines = ["| method | path | query | who | body | answers |", "|---|---|---|---|---|---|"]
    for path, item in sorted(doc["paths"].items()):
        for method in _METHODS:
            if method in item:
                lines.append(_row(method, path, item[method]))
    return "\n".join(lines)


def _row(method: str, path: str, operation: dict) -> str:
    query = " ".join(f"`{p['name']}`" for p in operation.get("parameters", []) if p["in"] == "query")
    body = operation.get("requestBody", {}).get("content", {})
    body_names = {_name(media.get("schema")) for media in body.values()} - {""}
    answers = ", ".join(f"{status} {_name(answer.get('content', {}).get('application/json', {}).get('schema'))}"
                        .strip() for status, answer in operation["responses"].items() if not status.endswith("XX"))
    return (f"| {method.upper()} | `{path}` | {query} | {_who(operation)} | {' '.join(sorted(body_names)) or '—'} "
            f"| {answers} |")


def _who(operation: dict) -> str:
    schemes = [name for requirement in operation["security"] for name in requirement]
    if not schemes:
        return "anyone"
    if schemes == ["endpointKey"]:
        return "endpoint key"
    who = operation.get("x-nimbus-role") or "token"
    return who + (", run token" if operation.get("x-nimbus-run-token") else "")


def _name(schema: dict | None) -> str:
    if not schema:
        return "any JSON" if schema == {} else ""
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    return "JSON"


def rewrite(text: str, table: str) -> str:
    """`text` with the part between the markers replaced by `table`."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"docs/api.md lacks the markers {BEGIN!r} and {END!r}")
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


if __name__ == "__main__":
    import chalicelib.api.app  # noqa: F401 - late: only the command needs every blueprint's routes declared
    DOCS.write_text(rewrite(DOCS.read_text(), markdown(document())))
    print(f"wrote the routes table of {DOCS}", file=sys.stderr)
