"""The audit log's storage contract, on SQLite and on DynamoDB (moto): an entry commits or fails with the
change it records, entries read back newest first in the order they were made, pages do not overlap."""
from __future__ import annotations

import pytest

from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.services.audit import Audit
from chalicelib.services.identity import Principal
from chalicelib.store.table import ConditionFailed, Put, item_absent

ALICE = Principal(user="alice", is_admin=False, token_id="t-1")


@pytest.fixture
def audit(table, blobs, settings) -> Audit:
    key = table_keys.workspace("ws")
    table.put({"pk": key.pk, "sk": key.sk, "entity": "workspace", "name": "ws", "id": "w1"})
    return Audit(Context(table, blobs, settings))


def test_an_entry_commits_with_its_change(audit, table):
    change = {"pk": "WS#ws", "sk": "MEMBER#bob", "role": "reader"}
    table.transact([Put(change, item_absent()), audit.entry(ALICE, "ws", "member.added", "bob", {"role": "reader"})])
    [entry] = audit.list("ws")["entries"]
    assert (entry["actor"], entry["actor_token_id"], entry["action"], entry["target"], entry["details"]) == \
        ("alice", "t-1", "member.added", "bob", {"role": "reader"})


def test_an_entry_fails_with_its_change(audit, table):
    table.put({"pk": "WS#ws", "sk": "MEMBER#bob", "role": "reader"})
    with pytest.raises(ConditionFailed):
        table.transact([Put({"pk": "WS#ws", "sk": "MEMBER#bob", "role": "owner"}, item_absent()),
                        audit.entry(ALICE, "ws", "member.added", "bob")])
    assert audit.list("ws")["entries"] == []


def test_entries_made_within_one_millisecond_read_back_in_order_and_pages_do_not_overlap(audit):
    frozen = 1_700_000_000.0
    audit.ctx.clock = lambda: frozen
    for n in range(25):
        audit.record(ALICE, "ws", "member.added", f"u{n:02d}")
    seen, token = [], None
    while True:
        page = audit.list("ws", max_results=7, page_token=token)
        seen += [e["target"] for e in page["entries"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == [f"u{n:02d}" for n in reversed(range(25))]


def test_an_entry_never_holds_a_secret_value_nor_an_unknown_action(audit):
    with pytest.raises(ValueError):
        audit.entry(ALICE, "ws", "endpoint.keys_regenerated", "ep", {"key": "s3cr3t"})
    with pytest.raises(ValueError):
        audit.entry(ALICE, "ws", "workspace.renamed", "ws")
    assert audit.list("ws")["entries"] == []


def test_the_platforms_own_changes_name_no_actor(audit):
    audit.record(None, "ws", "compute.deleted", "box")
    [entry] = audit.list("ws")["entries"]
    assert (entry["actor"], entry["actor_token_id"]) == (None, None)
