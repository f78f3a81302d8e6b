"""What a dataset's paths stand for: the files they match on their datastores, and a fingerprint of them.

A path is relative to its datastore's root: a file, a folder (every file under it), or a glob (`*` and
`?` within one name, `[...]` a character class, `**` any number of folders). The fingerprint is a hash
of the listing alone: each file's datastore, path, size and the tag its store gives (S3's ETag, a local
file's inode and modification time), so it costs one listing and never reads a byte of data.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from chalicelib.errors import Invalid
from chalicelib.services.outputs import check_output_path
from chalicelib.store.blobs import Blobs

GLOB_CHARACTERS = frozenset("*?[")
MAX_PATHS = 100
MAX_FILES = 1_000_000


@dataclass(frozen=True)
class SourceFile:
    datastore: str
    path: str  # relative to the datastore's root
    size: int
    tag: str | None


def check_paths(paths, field: str = "paths") -> list[tuple[str, str]]:
    """[(datastore, path)] from [{datastore, path}], each path under the one name policy."""
    if not isinstance(paths, list) or not 1 <= len(paths) <= MAX_PATHS:
        raise Invalid(f"{field} must list 1-{MAX_PATHS} paths", field=field)
    checked = []
    for index, entry in enumerate(paths):
        if not isinstance(entry, dict) or not isinstance(entry.get("datastore"), str):
            raise Invalid(f"{field}[{index}] must be an object with datastore and path", field=f"{field}[{index}]")
        path = entry.get("path")
        check_output_path(path.rstrip("/") if isinstance(path, str) and path != "/" else "", f"{field}[{index}].path")
        checked.append((entry["datastore"], path))
    return checked


def is_glob(path: str) -> bool:
    return any(c in GLOB_CHARACTERS for c in path)


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern:
    """The regular expression a glob stands for, matched against whole relative paths."""
    out, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:[^/]+/)*")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.find("]", index + 2)
            if end == -1:
                raise Invalid(f"glob {pattern!r} opens a '[' it never closes", field="path")
            body = pattern[index + 1:end]
            negated = body.startswith("!")
            members = body[1:] if negated else body
            # Ranges (a-z) stay ranges; a leading '^' is a character here, as in the shell's globs.
            members = ("\\" + members if members.startswith("^") else members).replace("[", "\\[")
            out.append("[" + ("^" if negated else "") + members + "]")
            index = end + 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out))


def matching_files(blobs: Blobs, base: str, datastore: str, path: str, field: str) -> list[SourceFile]:
    """The files one path stands for, in path order; a path that matches nothing is a 400 naming it."""
    if is_glob(path):
        literal = path[:min(path.index(c) for c in GLOB_CHARACTERS if c in path)]
        folder = literal[:literal.rfind("/") + 1]  # list from the deepest folder without a glob character
        pattern = glob_regex(path)
        found = [info for info in blobs.list_all(base + folder) if pattern.fullmatch(info.key[len(base):])]
    else:
        exact = blobs.find(base + path.rstrip("/")) if not path.endswith("/") else None
        found = [exact] if exact is not None else list(blobs.list_all(base + path.rstrip("/") + "/"))
    if not found:
        raise Invalid(f"{field} {path!r} matches no file on datastore {datastore!r}", field=field)
    if len(found) > MAX_FILES:
        raise Invalid(f"{field} {path!r} matches more than {MAX_FILES:,} files", field=field)
    return [SourceFile(datastore, info.key[len(base):], info.size, info.tag) for info in found]


def fingerprint(files: list[SourceFile]) -> str:
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: (f.datastore, f.path)):
        digest.update(f"{file.datastore}\0{file.path}\0{file.size}\0{file.tag or ''}\n".encode())
    return digest.hexdigest()
