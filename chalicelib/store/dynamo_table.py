"""The Table port on DynamoDB (one table, single-table design; see docs/data-model.md)."""
from __future__ import annotations

import math
import threading
import time
from decimal import Decimal
from typing import Any, Sequence

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from chalicelib.errors import Invalid, Unavailable
from chalicelib.store.schema import INDEXES
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
    as_path,
)

_RETRYABLE = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
              "InternalServerError", "ServiceUnavailable"}
_serializer, _deserializer = TypeSerializer(), TypeDeserializer()
_FLOAT_TAG = "$float"  # non-finite floats (and ones outside DynamoDB's number range) travel as {"$float": repr}


def to_attribute(value: Any) -> dict:
    return _serializer.serialize(_encode(value))


def from_attribute(value: dict) -> Any:
    return _decode(_deserializer.deserialize(value))


def _encode(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and (value == 0 or 1e-125 < abs(value) < 9.9e125):
            return Decimal(repr(value))
        return {_FLOAT_TAG: repr(value)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    raise TypeError(f"cannot store {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, Decimal):
        # DynamoDB normalises numbers, so 3.0 comes back as 3: integral numbers decode as int.
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        if len(value) == 1 and _FLOAT_TAG in value:
            return float(value[_FLOAT_TAG])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class _Expression:
    """Collects attribute-name and value placeholders for one request."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, dict] = {}

    def name(self, path) -> str:
        parts = []
        for part in as_path(path):
            placeholder = f"#n{len(self.names)}"
            self.names[placeholder] = part
            parts.append(placeholder)
        return ".".join(parts)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = to_attribute(value)
        return placeholder

    def condition(self, cond: Cond) -> str:
        if cond.op == "item_exists":
            return f"attribute_exists({self.name('pk')})"
        if cond.op == "item_absent":
            return f"attribute_not_exists({self.name('pk')})"
        if cond.op == "all":
            return " AND ".join(f"({self.condition(part)})" for part in cond.parts)
        if cond.op == "any":
            return " OR ".join(f"({self.condition(part)})" for part in cond.parts)
        path = self.name(cond.path)
        if cond.op == "absent":
            return f"attribute_not_exists({path})"
        if cond.op == "eq":
            return f"{path} = {self.value(cond.value)}"
        if cond.op == "absent_or_eq":
            return f"attribute_not_exists({path}) OR {path} = {self.value(cond.value)}"
        if cond.op == "in":
            return f"{path} IN ({', '.join(self.value(v) for v in cond.value)})"
        if cond.op == "lt":
            return f"{path} < {self.value(cond.value)}"
        if cond.op == "gt":
            return f"{path} > {self.value(cond.value)}"
        raise ValueError(f"unknown condition {cond.op}")

    def apply(self, request: dict, condition: Cond | None) -> dict:
        if condition is not None:
            request["ConditionExpression"] = self.condition(condition)
        if self.names:
            request["ExpressionAttributeNames"] = self.names
        if self.values:
            request["ExpressionAttributeValues"] = self.values
        return request


def _key(key: Key) -> dict:
    return {"pk": {"S": key.pk}, "sk": {"S": key.sk}}


def _update_request(table: str, update: Update) -> dict:
    expr = _Expression()
    sets = [f"{expr.name(p)} = {expr.value(v)}" for p, v in update.set.items()]
    for p, v in update.set_if_absent.items():
        name = expr.name(p)
        sets.append(f"{name} = if_not_exists({name}, {expr.value(v)})")
    for p, amount in update.add.items():
        name = expr.name(p)
        sets.append(f"{name} = if_not_exists({name}, {expr.value(0)}) + {expr.value(amount)}")
    clauses = []
    if sets:
        clauses.append("SET " + ", ".join(sets))
    if update.remove:
        clauses.append("REMOVE " + ", ".join(expr.name(p) for p in update.remove))
    request = {"TableName": table, "Key": _key(update.key)}
    if clauses:
        request["UpdateExpression"] = " ".join(clauses)
    return expr.apply(request, update.condition)


class DynamoTable(Table):
    def __init__(self, client, table_name: str):
        self.client = client
        self.table_name = table_name
        self.writes = 0
        self._writes_lock = threading.Lock()

    def _count(self, n: int) -> None:
        with self._writes_lock:
            self.writes += n

    def _call(self, method: str, **request) -> dict:
        """One request (botocore's client retries throttling: chalicelib/aws_clients.py); errors become
        domain errors."""
        try:
            return getattr(self.client, method)(**request)
        except ClientError as err:
            code = err.response["Error"]["Code"]
            if code == "ConditionalCheckFailedException":
                raise ConditionFailed() from err
            if code == "TransactionCanceledException":
                reasons = err.response.get("CancellationReasons", [])
                failed = [i for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"]
                if failed:
                    raise ConditionFailed(index=failed[0]) from err
                if any(r.get("Code") in ("TransactionConflict", "ThrottlingError") for r in reasons):
                    raise Unavailable("the table is busy; retry") from err
                raise
            if code == "ValidationException":
                raise Invalid(err.response["Error"].get("Message", "invalid request")) from err
            if code in _RETRYABLE:  # still throttled after the client's own retries
                raise Unavailable("the table is busy; retry") from err
            raise

    def get(self, pk: str, sk: str, *, consistent: bool = True) -> dict | None:
        response = self._call(
            "get_item", TableName=self.table_name, Key=_key(Key(pk, sk)), ConsistentRead=consistent
        )
        item = response.get("Item")
        return {k: from_attribute(v) for k, v in item.items()} if item else None

    def put(self, item: dict, condition: Cond | None = None) -> None:
        request = {"TableName": self.table_name, "Item": {k: to_attribute(v) for k, v in item.items()}}
        self._call("put_item", **_Expression().apply(request, condition))
        self._count(1)

    def update(self, update: Update) -> dict:
        response = self._call("update_item", ReturnValues="ALL_NEW", **_update_request(self.table_name, update))
        self._count(1)
        return {k: from_attribute(v) for k, v in response["Attributes"].items()}

    def delete(self, pk: str, sk: str, condition: Cond | None = None) -> None:
        request = {"TableName": self.table_name, "Key": _key(Key(pk, sk))}
        self._call("delete_item", **_Expression().apply(request, condition))
        self._count(1)

    def query(self, query: Query) -> Page:
        expr = _Expression()
        if query.index is None:
            hash_key, range_key = "pk", "sk"
        else:
            if query.index not in INDEXES:
                raise Invalid(f"unknown index {query.index!r}", field="index")
            hash_key, range_key = INDEXES[query.index]
        condition = f"{expr.name(hash_key)} = {expr.value(query.pk)}"
        if query.sk_prefix is not None:
            condition += f" AND begins_with({expr.name(range_key)}, {expr.value(query.sk_prefix)})"
        if query.sk_gte is not None and query.sk_lte is not None:
            condition += f" AND {expr.name(range_key)} BETWEEN {expr.value(query.sk_gte)} AND {expr.value(query.sk_lte)}"
        elif query.sk_gte is not None:
            condition += f" AND {expr.name(range_key)} >= {expr.value(query.sk_gte)}"
        elif query.sk_lte is not None:
            condition += f" AND {expr.name(range_key)} <= {expr.value(query.sk_lte)}"
        request = {"TableName": self.table_name, "KeyConditionExpression": condition,
                   "ScanIndexForward": query.forward}
        if query.index is not None:
            request["IndexName"] = query.index
        if query.limit is not None:
            request["Limit"] = query.limit
        if query.start:
            request["ExclusiveStartKey"] = {k: {"S": v} for k, v in query.start.items()}
        response = self._call("query", **expr.apply(request, None))
        items = [{k: from_attribute(v) for k, v in item.items()} for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return Page(items, {k: v["S"] for k, v in last.items()} if last else None)

    def transact(self, operations: Sequence[Operation]) -> None:
        if len(operations) > 100:
            raise Invalid("a transaction holds at most 100 operations")
        self._call("transact_write_items", TransactItems=[self._transact_item(op) for op in operations])
        self._count(sum(1 for op in operations if not isinstance(op, Check)))

    def _transact_item(self, op: Operation) -> dict:
        if isinstance(op, Put):
            request = {"TableName": self.table_name, "Item": {k: to_attribute(v) for k, v in op.item.items()}}
            return {"Put": _Expression().apply(request, op.condition)}
        if isinstance(op, Update):
            return {"Update": _update_request(self.table_name, op)}
        request = {"TableName": self.table_name, "Key": _key(op.key)}
        if isinstance(op, Delete):
            return {"Delete": _Expression().apply(request, op.condition)}
        return {"ConditionCheck": _Expression().apply(request, op.condition)}

    def batch_put(self, items: Sequence[dict]) -> None:
        self._batch_write([{"PutRequest": {"Item": {k: to_attribute(v) for k, v in i.items()}}} for i in items])

    def batch_delete(self, keys: Sequence[Key]) -> None:
        self._batch_write([{"DeleteRequest": {"Key": _key(k)}} for k in keys])

    def _batch_write(self, requests: list[dict]) -> None:
        for start in range(0, len(requests), 25):
            pending = requests[start : start + 25]
            for attempt in range(8):
                response = self._call("batch_write_item", RequestItems={self.table_name: pending})
                self._count(len(pending) - len(response.get("UnprocessedItems", {}).get(self.table_name, [])))
                pending = response.get("UnprocessedItems", {}).get(self.table_name, [])
                if not pending:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise Unavailable("the table did not accept every write; retry")
