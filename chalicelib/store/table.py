"""The Table port: an item store with DynamoDB's semantics, implemented by DynamoDB and by SQLite.

Items are plain dicts of str, int, float (NaN and ±inf included), bool, None, list and dict, keyed by
`pk` + `sk` (see schema.py). Adapters implement five primitives; conditions are a small structured
vocabulary that each adapter translates (DynamoDB) or evaluates inside a write transaction (SQLite).
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from chalicelib.domain.table_keys import Key
from chalicelib.errors import Conflict

Path = tuple[str, ...]  # ("status",) or ("metrics", "accuracy"): a top-level or nested map attribute


def as_path(path: str | Path) -> Path:
    return (path,) if isinstance(path, str) else tuple(path)


class ConditionFailed(Conflict):
    """A write's condition did not hold. In a transaction, `index` names the operation that failed."""

    def __init__(self, message: str = "condition failed", *, index: int | None = None):
        super().__init__(message)
        self.index = index


# --- conditions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cond:
    op: str  # item_exists | item_absent | eq | in | absent | absent_or_eq | lt | gt | all | any
    path: Path = ()
    value: Any = None
    parts: tuple["Cond", ...] = ()


def item_exists() -> Cond:
    return Cond("item_exists")


def item_absent() -> Cond:
    return Cond("item_absent")


def attr_eq(path: str | Path, value: Any) -> Cond:
    return Cond("eq", as_path(path), value)


def attr_in(path: str | Path, values: Sequence[Any]) -> Cond:
    return Cond("in", as_path(path), tuple(values))


def attr_absent(path: str | Path) -> Cond:
    return Cond("absent", as_path(path))


def attr_absent_or_eq(path: str | Path, value: Any) -> Cond:
    return Cond("absent_or_eq", as_path(path), value)


def attr_lt(path: str | Path, value: int | float) -> Cond:
    """The attribute exists and is a number below `value`."""
    return Cond("lt", as_path(path), value)


def attr_gt(path: str | Path, value: int | float) -> Cond:
    """The attribute exists and is a number above `value`."""
    return Cond("gt", as_path(path), value)


def all_of(*conds: Cond | None) -> Cond | None:
    parts = tuple(c for c in conds if c is not None)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Cond("all", parts=parts)


def any_of(*conds: Cond) -> Cond:
    """At least one holds (e.g. a lease that is absent or has lapsed)."""
    return conds[0] if len(conds) == 1 else Cond("any", parts=tuple(conds))


_MISSING = object()


def lookup(item: dict | None, path: Path) -> Any:
    node: Any = item
    for name in path:
        if not isinstance(node, dict) or name not in node:
            return _MISSING
        node = node[name]
    return node


def evaluate(cond: Cond | None, item: dict | None) -> bool:
    """Evaluate a condition against the current item (None when absent), as DynamoDB would."""
    if cond is None:
        return True
    if cond.op == "item_exists":
        return item is not None
    if cond.op == "item_absent":
        return item is None
    if cond.op == "all":
        return all(evaluate(part, item) for part in cond.parts)
    if cond.op == "any":
        return any(evaluate(part, item) for part in cond.parts)
    current = lookup(item, cond.path)
    if cond.op == "absent":
        return current is _MISSING
    if cond.op == "eq":
        return current is not _MISSING and _same(current, cond.value)
    if cond.op == "absent_or_eq":
        return current is _MISSING or _same(current, cond.value)
    if cond.op == "in":
        return current is not _MISSING and any(_same(current, v) for v in cond.value)
    if cond.op in ("lt", "gt"):
        if not isinstance(current, (int, float)) or isinstance(current, bool):
            return False
        return current < cond.value if cond.op == "lt" else current > cond.value
    raise ValueError(f"unknown condition {cond.op}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# --- operations -------------------------------------------------------------------------------------
@dataclass
class Put:
    item: dict
    condition: Cond | None = None


@dataclass
class Update:
    """UpdateItem: creates the item when absent (unless a condition says otherwise)."""

    key: Key
    set: dict[Path | str, Any] = field(default_factory=dict)
    set_if_absent: dict[Path | str, Any] = field(default_factory=dict)
    add: dict[Path | str, int | float] = field(default_factory=dict)  # atomic counters
    remove: list[Path | str] = field(default_factory=list)
    condition: Cond | None = None


@dataclass
class Delete:
    key: Key
    condition: Cond | None = None


@dataclass
class Check:
    key: Key
    condition: Cond


Operation = Put | Update | Delete | Check


def apply_update(item: dict | None, update: Update) -> dict:
    """The item after `update`, computed in Python (the SQLite adapter's semantics, mirrored by DynamoDB)."""
    new = dict(item) if item is not None else {"pk": update.key.pk, "sk": update.key.sk}
    for path, value in update.set_if_absent.items():
        if lookup(new, as_path(path)) is _MISSING:
            _assign(new, as_path(path), value)
    for path, value in update.set.items():
        _assign(new, as_path(path), value)
    for path, amount in update.add.items():
        current = lookup(new, as_path(path))
        _assign(new, as_path(path), amount if current is _MISSING else current + amount)
    for path in update.remove:
        parent = lookup(new, as_path(path)[:-1]) if len(as_path(path)) > 1 else new
        if isinstance(parent, dict):
            parent.pop(as_path(path)[-1], None)
    return new


def _assign(item: dict, path: Path, value: Any) -> None:
    node = item
    for name in path[:-1]:
        child = node.get(name)
        child = dict(child) if isinstance(child, dict) else {}
        node[name] = child
        node = child
    node[path[-1]] = value


# --- queries ----------------------------------------------------------------------------------------
@dataclass
class Query:
    """Query one partition of the table or of an index, optionally narrowed on the sort key."""

    pk: str
    index: str | None = None
    sk_prefix: str | None = None
    sk_gte: str | None = None
    sk_lte: str | None = None
    forward: bool = True
    limit: int | None = None
    start: dict | None = None  # a previous Page.next


@dataclass
class Page:
    items: list[dict]
    next: dict | None  # pass as Query.start to continue; None when the partition is exhausted


class Table(abc.ABC):
    """The port. `writes` counts items written (puts, updates, deletes), for benchmarks and operators."""

    writes: int = 0

    @abc.abstractmethod
    def get(self, pk: str, sk: str, *, consistent: bool = True) -> dict | None: ...

    @abc.abstractmethod
    def put(self, item: dict, condition: Cond | None = None) -> None: ...

    @abc.abstractmethod
    def update(self, update: Update) -> dict:
        """Apply and return the new item; raises ConditionFailed."""

    @abc.abstractmethod
    def delete(self, pk: str, sk: str, condition: Cond | None = None) -> None: ...

    @abc.abstractmethod
    def query(self, query: Query) -> Page: ...

    @abc.abstractmethod
    def transact(self, operations: Sequence[Operation]) -> None:
        """All or nothing, at most 100 operations; raises ConditionFailed(index=…)."""

    @abc.abstractmethod
    def batch_put(self, items: Sequence[dict]) -> None:
        """Unconditional puts, not atomic as a whole (BatchWriteItem)."""

    @abc.abstractmethod
    def batch_delete(self, keys: Sequence[Key]) -> None: ...

    # --- conveniences written once for every adapter ---------------------------------------------
    def get_item(self, key: Key) -> dict | None:
        return self.get(key.pk, key.sk)

    def query_all(self, query: Query) -> Iterator[dict]:
        start = query.start
        while True:
            page = self.query(Query(**{**query.__dict__, "start": start}))
            yield from page.items
            if page.next is None:
                return
            start = page.next
