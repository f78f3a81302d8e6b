"""The SQLite table's file: durable settings, and older layouts migrated when opened."""
from __future__ import annotations

import json
import sqlite3

import pytest

from chalicelib.store import schema
from chalicelib.store.sqlite_table import SCHEMA_VERSION, SqliteTable
from chalicelib.store.table import Query


def test_a_new_file_is_wal_with_synchronous_normal_at_the_current_version(tmp_path):
    table = SqliteTable(tmp_path / "t.db")
    db = table._connection()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_without_a_later_index_column_gains_it_filled_from_its_items(tmp_path):
    # Given a file written before the last index existed (its column and index absent, no version)
    path = tmp_path / "old.db"
    *older, (last, (hash_key, range_key)) = schema.INDEXES.items()
    kept = [c for _, pair in older for c in pair]
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, {', '.join(f'{c} TEXT' for c in kept)}, "
                   "data TEXT NOT NULL, PRIMARY KEY (pk, sk)) WITHOUT ROWID")
        for number, value in enumerate(["1.5", "NaN"]):
            item = {"pk": f"P#{number}", "sk": "S", hash_key: "H", range_key: f"r{number}", "note": "kept",
                    "value": float(value)}
            data = json.dumps(item)  # NaN as its bare literal, as dumps_stored writes it
            db.execute("INSERT INTO items (pk, sk, data) VALUES (?, ?, ?)", (item["pk"], item["sk"], data))

    # When this code opens it
    table = SqliteTable(path)

    # Then the index answers for the old items, the items are unchanged, and the file is at the current version
    assert [i["pk"] for i in table.query(Query("H", index=last)).items] == ["P#0", "P#1"]
    assert table.get("P#0", "S")["note"] == "kept"
    assert table._connection().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "new.db"
    SqliteTable(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer release"):
        SqliteTable(path)
