"""The Secrets port on the local filesystem: one Fernet-encrypted file per secret.

    $NIMBUS_HOME/secret.key             the Fernet key (0600), created once, atomically
    $NIMBUS_HOME/secrets/<sha256>.secret one file per secret (0600); the name is hashed into the file
                                         name, so any valid name is a safe, fixed-length file name

The plaintext holds the name next to the value and is checked on read, so a file copied over another
secret's file is refused rather than served under the wrong name.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from chalicelib.errors import NimbusError, NotFound
from chalicelib.store.secrets import Secrets


class LocalSecrets(Secrets):
    def __init__(self, home: Path):
        self.key_file = Path(home) / "secret.key"
        self.folder = Path(home) / "secrets"
        self._fernet: Fernet | None = None
        self._lock = threading.Lock()

    # --- the primitives ------------------------------------------------------------------------
    def _put(self, name: str, value: str) -> None:
        token = self._cipher().encrypt(json.dumps({"name": name, "value": value}).encode("utf-8"))
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomically(self._path(name), token)

    def _get(self, name: str) -> str:
        try:
            token = self._path(name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no secret {name!r}", field="name") from None
        try:
            record = json.loads(self._cipher().decrypt(token))
        except (InvalidToken, ValueError):
            raise NimbusError(f"secret {name!r} cannot be decrypted with {self.key_file}") from None
        if record.get("name") != name:
            raise NimbusError(f"the file of secret {name!r} holds another secret")
        return record["value"]

    def _delete(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass

    # --- helpers -------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.folder / (hashlib.sha256(name.encode("utf-8")).hexdigest() + ".secret")

    def _cipher(self) -> Fernet:
        with self._lock:
            if self._fernet is None:
                self._fernet = Fernet(self._load_or_create_key())
            return self._fernet

    def _load_or_create_key(self) -> bytes:
        try:
            return self.key_file.read_bytes().strip()
        except FileNotFoundError:
            pass
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        temp = _write_temp(self.key_file.parent, Fernet.generate_key())
        try:
            # link() never replaces an existing file: when two processes race, one key wins and both
            # use it (os.replace would let the loser overwrite the key the winner already used).
            os.link(temp, self.key_file)
        except FileExistsError:
            pass
        finally:
            os.unlink(temp)
        return self.key_file.read_bytes().strip()


def _write_temp(folder: Path, data: bytes) -> str:
    """A new file with mode 0600 (mkstemp's) holding `data`, flushed to disk."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def _write_atomically(path: Path, data: bytes) -> None:
    temp = _write_temp(path.parent, data)
    try:
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
