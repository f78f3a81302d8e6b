"""The Table port on SQLite (WAL): the same keys, conditions and transactions as DynamoDB.

Items live as JSON in one table keyed by (pk, sk), with the GSI key columns copied out so an index
Query is an indexed range read. Every write runs in BEGIN IMMEDIATE: the condition is evaluated and
the item written while holding the write lock, so concurrent writers (threads or processes) serialise.

Durability: WAL with synchronous=NORMAL. A transaction is in the WAL file (the operating system's page
cache) when COMMIT returns, so it survives a kill of the process at any moment (the next open replays
the WAL); a power loss may lose the last transactions, never corrupt the file. FULL would fsync each
commit for power loss too, at a cost on every write.

Schema: `PRAGMA user_version` is the layout's version (SCHEMA_VERSION). Opening an older file migrates
it in one transaction: an index column added to schema.INDEXES since is added and filled from the items.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Sequence


from chalicelib.errors import Invalid
from chalicelib.json_codec import dumps_stored, loads
from chalicelib.store import schema
from chalicelib.store.table import (
    Check,
    ConditionFailed,
    Cond,
    Delete,
    Key,
    Operation,
    Page,
    Put,
    Query,
    Table,
    Update,
    apply_update,
    evaluate,
)

SCHEMA_VERSION = 1  # 0: a file from before versioning (481b1ea and earlier), same layout
_TOP = chr(0x10FFFF)  # sorts after every continuation of a prefix (SQLite compares UTF-8 bytes)
_INDEX_COLUMNS = [a for pair in schema.INDEXES.values() for a in pair]


PAGE_CACHE_KIB = 256


class SqliteTable(Table):
    def __init__(self, path: Path | str):
        self.path = str(path)
        self._local = threading.local()
        self._writes_lock = threading.Lock()
        self.writes = 0
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")  # one process creates or migrates; the others wait, then find it done
        try:
            _create_or_migrate(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a process crash (kill -9).
            db.execute("PRAGMA synchronous=NORMAL")
            # Each thread's connection has a page cache of its own (2 MiB by default), and a dozen of them
            # fill as the file grows: a small one keeps the platform's memory flat, and the pages it
            # misses come from the operating system's cache.
            db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            self._local.db = db
        return db

    # --- reads ----------------------------------------------------------------------------------
    def get(self, pk: str, sk: str, *, consistent: bool = True) -> dict | None:
        row = self._connection().execute("SELECT data FROM items WHERE pk=? AND sk=?", (pk, sk)).fetchone()
        return loads(row[0]) if row else None

    def query(self, query: Query) -> Page:
        if query.index is None:
            hash_key, range_key, order = "pk", "sk", ["sk"]
        elif query.index in schema.INDEXES:
            hash_key, range_key = schema.INDEXES[query.index]
            order = [range_key, "pk", "sk"]
        else:
            raise Invalid(f"unknown index {query.index!r}", field="index")
        where, args = [f"{hash_key} = ?"], [query.pk]
        if query.index is not None:
            where.append(f"{range_key} IS NOT NULL")
        if query.sk_prefix is not None:
            where.append(f"{range_key} >= ? AND {range_key} < ?")
            args += [query.sk_prefix, query.sk_prefix + _TOP]
        if query.sk_gte is not None:
            where.append(f"{range_key} >= ?")
            args.append(query.sk_gte)
        if query.sk_lte is not None:
            where.append(f"{range_key} <= ?")
            args.append(query.sk_lte)
        if query.start:
            comparison = ">" if query.forward else "<"
            where.append(f"({', '.join(order)}) {comparison} ({', '.join('?' * len(order))})")
            if not isinstance(query.start, dict) or not all(isinstance(query.start.get(c), str) for c in order):
                raise Invalid("page_token does not belong to this listing", field="page_token")
            args += [query.start[c] for c in order]
        direction = "ASC" if query.forward else "DESC"
        sql = f"SELECT data FROM items WHERE {' AND '.join(where)} ORDER BY " + ", ".join(
            f"{c} {direction}" for c in order
        )
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit) + 1}"
        rows = self._connection().execute(sql, args).fetchall()
        items = [loads(r[0]) for r in rows]
        next_key = None
        if query.limit is not None and len(items) > query.limit:
            items = items[: query.limit]
            next_key = {c: items[-1][c] for c in {hash_key, *order}}  # the shape of DynamoDB's LastEvaluatedKey
        return Page(items, next_key)

    # --- writes ---------------------------------------------------------------------------------
    def put(self, item: dict, condition: Cond | None = None) -> None:
        self.transact([Put(item, condition)], _single=True)

    def update(self, update: Update) -> dict:
        return self.transact([update], _single=True)[0]

    def delete(self, pk: str, sk: str, condition: Cond | None = None) -> None:
        self.transact([Delete(Key(pk, sk), condition)], _single=True)

    def batch_put(self, items: Sequence[dict]) -> None:
        for start in range(0, len(items), 100):
            self.transact([Put(item) for item in items[start : start + 100]])

    def batch_delete(self, keys: Sequence[Key]) -> None:
        for start in range(0, len(keys), 100):
            self.transact([Delete(key) for key in keys[start : start + 100]])

    def transact(self, operations: Sequence[Operation], _single: bool = False) -> list[dict | None]:
        _check_batch(operations)
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            results = [self._apply(db, index, op, _single) for index, op in enumerate(operations)]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        with self._writes_lock:
            self.writes += sum(1 for op in operations if not isinstance(op, Check))
        return results

    def _apply(self, db: sqlite3.Connection, index: int, op: Operation, single: bool) -> dict | None:
        key = Key(op.item["pk"], op.item["sk"]) if isinstance(op, Put) else op.key
        row = db.execute("SELECT data FROM items WHERE pk=? AND sk=?", (key.pk, key.sk)).fetchone()
        current = loads(row[0]) if row else None
        if not evaluate(op.condition, current):
            raise ConditionFailed(index=None if single else index)
        if isinstance(op, Check):
            return current
        if isinstance(op, Delete):
            db.execute("DELETE FROM items WHERE pk=? AND sk=?", (key.pk, key.sk))
            return None
        new = op.item if isinstance(op, Put) else apply_update(current, op)
        db.execute(
            f"INSERT OR REPLACE INTO items (pk, sk, {', '.join(_INDEX_COLUMNS)}, data) "
            f"VALUES (?, ?, {', '.join('?' * len(_INDEX_COLUMNS))}, ?)",
            [key.pk, key.sk, *[new.get(c) for c in _INDEX_COLUMNS], dumps_stored(new)],
        )
        return new


def _create_or_migrate(db: sqlite3.Connection) -> None:
    columns = ", ".join(f"{c} TEXT" for c in _INDEX_COLUMNS)
    db.execute(f"CREATE TABLE IF NOT EXISTS items (pk TEXT NOT NULL, sk TEXT NOT NULL, {columns}, "
               "data TEXT NOT NULL, PRIMARY KEY (pk, sk)) WITHOUT ROWID")
    present = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    for column in _INDEX_COLUMNS:
        if column not in present:  # an index added since the file was written: copy its keys out of the items
            db.execute(f"ALTER TABLE items ADD COLUMN {column} TEXT")
            # Read in Python: stored JSON may hold NaN literals, which SQLite's JSON functions refuse.
            for pk, sk, data in db.execute("SELECT pk, sk, data FROM items").fetchall():
                value = loads(data).get(column)
                if isinstance(value, str):
                    db.execute(f"UPDATE items SET {column} = ? WHERE pk = ? AND sk = ?", (value, pk, sk))
    for name, (hash_key, range_key) in schema.INDEXES.items():
        db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON items ({hash_key}, {range_key}, pk, sk) "
                   f"WHERE {hash_key} IS NOT NULL AND {range_key} IS NOT NULL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"the store was written by a newer release (schema {version} > {SCHEMA_VERSION}); "
                           "upgrade Nimbus to open it")
    if version < SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _check_batch(operations: Sequence[Operation]) -> None:
    if len(operations) > 100:
        raise Invalid("a transaction holds at most 100 operations")
    keys = [(op.item["pk"], op.item["sk"]) if isinstance(op, Put) else (op.key.pk, op.key.sk) for op in operations]
    if len(set(keys)) != len(keys):
        raise Invalid("a transaction cannot touch one item twice")
