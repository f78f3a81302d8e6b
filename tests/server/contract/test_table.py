"""The Table port's behaviour, proven on SQLite and on DynamoDB (moto)."""
import math
import threading

import pytest

from chalicelib.errors import Invalid
from chalicelib.store.table import (
    Check, ConditionFailed, Delete, Key, Put, Query, Update,
    all_of, any_of, attr_absent, attr_absent_or_eq, attr_eq, attr_gt, attr_in, attr_lt, item_absent, item_exists,
)


def test_put_get_roundtrip_keeps_types(table):
    item = {"pk": "A", "sk": "1", "s": "x", "i": 7, "f": 0.1, "b": True, "n": None,
            "l": [1, "two", 3.5], "m": {"nested": {"deep": 1.25}}, "nan": float("nan"),
            "inf": float("inf"), "ninf": float("-inf"), "tiny": 1e-300, "empty": ""}
    table.put(item)
    got = table.get("A", "1")
    assert math.isnan(got.pop("nan")) and item.pop("nan")
    assert got == item
    assert table.get("A", "missing") is None


def test_conditional_put_refuses_existing_item(table):
    table.put({"pk": "A", "sk": "1", "v": 1}, item_absent())
    with pytest.raises(ConditionFailed):
        table.put({"pk": "A", "sk": "1", "v": 2}, item_absent())
    assert table.get("A", "1")["v"] == 1


def test_update_creates_sets_adds_and_removes(table):
    new = table.update(Update(Key("A", "1"), set={"name": "x", ("m",): {}}, add={"count": 1},
                              set_if_absent={"created": 10}))
    assert new["count"] == 1 and new["created"] == 10 and new["name"] == "x"
    new = table.update(Update(Key("A", "1"), set={("m", "acc"): 0.5}, add={"count": 2},
                              set_if_absent={"created": 99}, remove=["name"]))
    assert new == {"pk": "A", "sk": "1", "count": 3, "created": 10, "m": {"acc": 0.5}}
    assert table.get("A", "1") == new


def test_update_conditions(table):
    table.put({"pk": "A", "sk": "1", "status": "Running", "types": {"acc": "scalar"}})
    table.update(Update(Key("A", "1"), set={"status": "Completed"}, condition=attr_eq("status", "Running")))
    with pytest.raises(ConditionFailed):
        table.update(Update(Key("A", "1"), set={"status": "Failed"}, condition=attr_in("status", ["Running", "Queued"])))
    with pytest.raises(ConditionFailed):
        table.update(Update(Key("B", "1"), set={"x": 1}, condition=item_exists()))
    assert table.get("B", "1") is None
    table.update(Update(Key("A", "1"), set={("types", "loss"): "scalar"},
                        condition=all_of(attr_absent_or_eq(("types", "loss"), "scalar"), attr_absent("gone"))))
    with pytest.raises(ConditionFailed):
        table.update(Update(Key("A", "1"), set={("types", "acc"): "list"},
                            condition=attr_absent_or_eq(("types", "acc"), "list")))
    table.update(Update(Key("A", "1"), add={"n": 1}, condition=attr_absent("n")))
    table.update(Update(Key("A", "1"), add={"n": 1}, condition=attr_lt("n", 2)))
    with pytest.raises(ConditionFailed):
        table.update(Update(Key("A", "1"), add={"n": 1}, condition=attr_lt("n", 2)))
    table.update(Update(Key("A", "1"), add={"n": -1}, condition=attr_gt("n", 1)))
    with pytest.raises(ConditionFailed):
        table.update(Update(Key("A", "1"), add={"n": -1}, condition=attr_gt("n", 1)))
    assert table.get("A", "1")["types"] == {"acc": "scalar", "loss": "scalar"}


def test_any_of_condition(table):
    lease_free = any_of(attr_absent("lease"), attr_lt(("lease", "until"), 100))
    table.update(Update(Key("A", "1"), set={"lease": {"until": 150}}, condition=lease_free))
    with pytest.raises(ConditionFailed):
        table.update(Update(Key("A", "1"), set={"lease": {"until": 250}}, condition=lease_free))
    table.update(Update(Key("A", "1"), set={"lease": {"until": 250}},
                        condition=any_of(attr_absent("lease"), attr_lt(("lease", "until"), 200))))
    assert table.get("A", "1")["lease"] == {"until": 250}


def test_delete_with_condition(table):
    table.put({"pk": "A", "sk": "1", "v": 1})
    with pytest.raises(ConditionFailed):
        table.delete("A", "1", attr_eq("v", 2))
    table.delete("A", "1", attr_eq("v", 1))
    assert table.get("A", "1") is None


def test_query_prefix_order_and_pages(table):
    table.batch_put([{"pk": "P", "sk": f"RUN#{i:03d}", "i": i} for i in range(7)] +
                    [{"pk": "P", "sk": "META"}, {"pk": "Q", "sk": "RUN#000"}])
    items = list(table.query_all(Query("P", sk_prefix="RUN#", limit=3)))
    assert [i["i"] for i in items] == list(range(7))
    page = table.query(Query("P", sk_prefix="RUN#", forward=False, limit=2))
    assert [i["i"] for i in page.items] == [6, 5] and page.next
    page = table.query(Query("P", sk_prefix="RUN#", forward=False, limit=2, start=page.next))
    assert [i["i"] for i in page.items] == [4, 3]
    assert [i["i"] for i in table.query(Query("P", sk_gte="RUN#002", sk_lte="RUN#004")).items] == [2, 3, 4]
    assert [i["i"] for i in table.query(Query("P", sk_lte="RUN#001", forward=False, limit=1)).items] == [1]
    assert table.query(Query("P", sk_prefix="NOPE#")).items == []


def test_index_query_is_sparse_and_sorted(table):
    for i, owner in enumerate(["u1", "u2", "u1", "u1"]):
        table.put({"pk": f"WS#{i}", "sk": "MEMBER", "gsi1pk": f"USER#{owner}", "gsi1sk": f"WS#{3 - i}"})
    table.put({"pk": "WS#9", "sk": "MEMBER"})  # no index keys: not in the index
    items = list(table.query_all(Query("USER#u1", index="gsi1", sk_prefix="WS#", limit=2)))
    assert [i["gsi1sk"] for i in items] == ["WS#0", "WS#1", "WS#3"]
    with pytest.raises(Invalid):
        table.query(Query("x", index="nope"))


def test_transaction_is_all_or_nothing(table):
    table.put({"pk": "A", "sk": "1", "v": 1})
    with pytest.raises(ConditionFailed) as failure:
        table.transact([
            Put({"pk": "B", "sk": "1"}, item_absent()),
            Update(Key("C", "1"), add={"n": 1}),
            Check(Key("A", "1"), attr_eq("v", 2)),
        ])
    assert failure.value.index == 2
    assert table.get("B", "1") is None and table.get("C", "1") is None
    table.transact([Put({"pk": "B", "sk": "1"}, item_absent()), Delete(Key("A", "1")),
                    Check(Key("B", "0"), item_absent())])
    assert table.get("B", "1") and table.get("A", "1") is None


def test_transaction_limits(table):
    with pytest.raises(Invalid):
        table.transact([Put({"pk": "A", "sk": str(i)}) for i in range(101)])


def test_batch_delete_and_write_counter(table):
    before = table.writes
    table.batch_put([{"pk": "A", "sk": str(i)} for i in range(30)])
    table.batch_delete([Key("A", str(i)) for i in range(30)])
    assert table.writes - before == 60
    assert table.query(Query("A")).items == []


def test_atomic_counter_under_concurrency(table):
    def bump():
        for _ in range(10):
            table.update(Update(Key("C", "1"), add={"n": 1}))

    threads = [threading.Thread(target=bump) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert table.get("C", "1")["n"] == 50
