"""Every successful answer an API test gets is checked against the OpenAPI document (api/openapi.py):
the response models stay true to what the services return, or these tests fail naming the field."""
from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator

import chalicelib.api.app  # noqa: F401 - the app declares every route
from chalicelib.api.openapi import document


@functools.lru_cache(maxsize=1)
def _operations() -> list[tuple[re.Pattern, str, dict]]:
    doc = document()
    found = []
    for path, item in doc["paths"].items():
        pattern = re.compile("^" + re.sub(r"{\w+}", "[^/]+", path) + "$")
        for method, operation in item.items():
            if method != "parameters":
                found.append((pattern, method.upper(), operation, path.count("{")))
    found.sort(key=lambda entry: entry[3])  # a literal segment wins over a parameter, as in the router
    return [(pattern, method, operation) for pattern, method, operation, _ in found]


@functools.lru_cache(maxsize=None)
def _validator(ref: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": ref, "components": document()["components"]})


def check_answer(method: str, url: str, status: int, body) -> None:
    """Raises AssertionError when a 2xx JSON answer does not match its route's schema for that status."""
    if not 200 <= status < 300 or body is None:
        return
    path = urlsplit(url).path
    for pattern, wanted, operation in _operations():
        if wanted == method.upper() and pattern.match(path):
            break
    else:
        raise AssertionError(f"{method} {path} answered {status} but the OpenAPI document has no such route")
    answer = operation["responses"].get(str(status))
    assert answer is not None, f"{method} {path} answered {status}, which its route does not declare"
    schema = answer.get("content", {}).get("application/json", {}).get("schema")
    if schema is None or "$ref" not in schema:
        return  # any JSON (the scoring route, this document itself)
    errors = sorted(_validator(schema["$ref"]).iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, (f"{method} {path} answered {status} with a body its schema {schema['$ref']} refuses: "
                        + "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                                    for e in errors[:5]))
