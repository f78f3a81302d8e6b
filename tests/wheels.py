"""A tiny real wheel for tests that install packages offline (`--no-index --find-links <folder>`).

Written with zipfile as the wheel format describes it (METADATA, WHEEL, RECORD with hashes) rather than
by `pip wheel`: the same installable file in milliseconds instead of seconds.
"""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

TINY_NAME, TINY_VERSION, TINY_MODULE = "nimbus-tiny", "0.1", "nimbus_tiny"
TINY_GREETING = "hello from nimbus-tiny"


def build_tiny_wheel(folder: Path) -> Path:
    """folder/nimbus_tiny-0.1-py3-none-any.whl, whose module `nimbus_tiny` defines GREETING."""
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"{TINY_MODULE}-{TINY_VERSION}.dist-info"
    files = {
        f"{TINY_MODULE}.py": f"GREETING = {TINY_GREETING!r}\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {TINY_NAME}\nVersion: {TINY_VERSION}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: nimbus-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{name},sha256={_digest(text.encode())},{len(text.encode())}" for name, text in files.items()]
    files[f"{dist_info}/RECORD"] = "\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
    path = folder / f"{TINY_MODULE}-{TINY_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
