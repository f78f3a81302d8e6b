"""Files only their owner may read (tokens, job records, key hashes), replaced atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_private_text(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, mode 0600 from the first byte (a temp file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temp, 0o600)  # an existing temp file keeps its mode through O_CREAT
    os.replace(temp, path)


def write_private(path: Path, data: dict) -> None:
    """Atomically replace `path` with JSON readable only by its owner."""
    write_private_text(path, json.dumps(data, indent=2))
