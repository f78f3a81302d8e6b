"""What the model registry accepts: names, refs, files, tags, properties."""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

from chalicelib.errors import Conflict, Invalid, TooLarge
from chalicelib.domain.validation import check_name
from chalicelib.domain.validation import check_entries
from chalicelib.services.snapshots import check_path

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
MODEL_RULE = "1-255 characters: letters, digits, '_', '.' and '-', starting with a letter or digit"
ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
ALIAS_RULE = "1-63 characters: lowercase letters, digits, '_' and '-', starting with a letter"
RESERVED_ALIASES = frozenset({"latest"})  # `latest` already means the highest version
MAX_FILES = 2000
MAX_FILE_LIST_BYTES = 200 * 1024  # the file list lives on the version item, which DynamoDB caps at 400 KB
MAX_ENTRIES = 200
MAX_ENTRIES_BYTES = 64 * 1024
MAX_DESCRIPTION = 5000
MAX_VERSION = 10**10 - 1  # the sort key holds ten digits


def check_model_name(name: Any, field: str = "name") -> str:
    return check_name(name, MODEL_NAME, field, MODEL_RULE)


def check_alias(alias: Any, field: str = "alias") -> str:
    check_name(alias, ALIAS_NAME, field, ALIAS_RULE)
    if alias in RESERVED_ALIASES:
        raise Invalid(f"{field} {alias!r} is reserved: it already names the highest version", field=field)
    return alias


def parse_version(value: Any, field: str = "version") -> int:
    """A version number given as an int or as decimal digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise Invalid(f"{field} must be a version number from 1 to {MAX_VERSION}", field=field)
    return value


def parse_ref(ref: Any, field: str = "model") -> tuple[str, str]:
    """'name:version', 'name:alias' or 'name' (the latest) as (name, version-or-alias-or-'latest')."""
    if not isinstance(ref, str) or not ref:
        raise Invalid(f"{field} must be 'name', 'name:version' or 'name:alias'", field=field)
    name, _, version = ref.partition(":")
    check_model_name(name, field)
    return name, version or "latest"


def asset_path(paths: Sequence[str]) -> str:
    """The file's name for one file, the folder's name when every file sits in one folder, else '.'."""
    firsts = {p.split("/", 1)[0] for p in paths}
    if len(firsts) == 1 and all("/" in p for p in paths):
        return firsts.pop()
    return paths[0] if len(paths) == 1 else "."


def check_upload_files(files: Any) -> list[dict]:
    """[{path, size}] as the request gave them, checked; errors name `files[i].<field>`."""
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise Invalid(f"files must list 1-{MAX_FILES} files", field="files")
    checked, seen = [], {}
    for index, entry in enumerate(files):
        field = f"files[{index}]"
        if not isinstance(entry, dict):
            raise Invalid(f"{field} must be an object of path and size", field=field)
        for unknown in set(entry) - {"path", "size"}:
            raise Invalid(f"{field}.{unknown} is not a known field", field=f"{field}.{unknown}")
        path = check_path(entry.get("path"), f"{field}.path")
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise Invalid(f"{field}.size must be an integer of at least 0", field=f"{field}.size")
        if path in seen:
            raise Invalid(f"{field}.path {path!r} repeats files[{seen[path]}].path", field=f"{field}.path")
        seen[path] = index
        checked.append({"path": path, "size": size})
    for f in checked:  # a file cannot also be the folder of another: the version could not be written out
        parts = f["path"].split("/")
        for depth in range(1, len(parts)):
            if (folder := "/".join(parts[:depth])) in seen:
                raise Invalid(f"files[{seen[folder]}].path {folder!r} is a file and also the folder of {f['path']!r}",
                              field=f"files[{seen[folder]}].path")
    check_file_list(checked, "files")
    return checked


def check_file_list(files: list[dict], field: str) -> None:
    if len(json.dumps(files)) > MAX_FILE_LIST_BYTES:
        raise TooLarge(f"the file list takes more than {MAX_FILE_LIST_BYTES} bytes; register fewer files "
                       "(e.g. one archive of them)", field=field)


def version_entries(entries: Any, field: str) -> dict[str, str]:
    checked = check_entries(entries if entries is not None else {}, field)
    check_room(checked, field)
    return dict(checked)


def check_room(entries: dict, field: str) -> None:
    if len(entries) > MAX_ENTRIES or sum(len(k) + len(v) for k, v in entries.items()) > MAX_ENTRIES_BYTES:
        raise Invalid(f"a model version holds at most {MAX_ENTRIES} {field} of {MAX_ENTRIES_BYTES} characters in all",
                      field=field)


def check_property(item: dict, key: str, value: str) -> None:
    current = item.get("properties", {}).get(key)
    if current is not None and current != value:
        raise Conflict(f"property {key!r} of model {item['name']}:{item['version']} is already {current!r}; "
                       "properties are write-once", field=f"properties.{key}")


def check_text(value: Any, field: str, limit: int) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise Invalid(f"{field} must be text of at most {limit} characters", field=field)
    return value


def tag_filters(tags: Sequence[str]) -> list[tuple[str, str | None]]:
    filters = []
    for text in tags:
        key, sep, value = text.partition("=")
        if not key:
            raise Invalid(f"tag filter {text!r} must be 'key' or 'key=value'", field="tag")
        filters.append((key, value if sep else None))
    return filters
