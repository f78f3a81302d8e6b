"""How metric batches are validated and cut into chunks (no I/O)."""
import json
import math

import pytest

from chalicelib.errors import Invalid, TooLarge
from chalicelib.services import metrics
from chalicelib.services.metrics import Series, _chunks, parse_series


def test_entries_of_one_name_merge_in_order_and_non_finite_strings_parse():
    series = parse_series([
        {"name": "loss", "values": [1, "NaN"], "steps": [0, 1]},
        {"name": "acc", "type": "scalar", "values": ["Infinity"]},
        {"name": "loss", "values": ["-Infinity"], "steps": [2]},
    ])
    loss = next(s for s in series if s.name == "loss")
    assert loss.values[0] == 1.0 and math.isnan(loss.values[1]) and loss.values[2] == -math.inf
    assert loss.steps == [0, 1, 2]


@pytest.mark.parametrize("entry, field", [
    ({"name": "x" * 256, "values": [1]}, "metrics[0].name"),
    ({"name": "", "values": [1]}, "metrics[0].name"),
    ({"name": "a", "type": "histogram", "values": [1]}, "metrics[0].type"),
    ({"name": "a", "values": []}, "metrics[0].values"),
    ({"name": "a", "values": ["high"]}, "metrics[0].values[0]"),
    ({"name": "a", "values": [True]}, "metrics[0].values[0]"),
    ({"name": "a", "values": [1, 2], "steps": [0]}, "metrics[0].steps"),
    ({"name": "a", "values": [1], "steps": [-1]}, "metrics[0].steps"),
    ({"name": "a", "type": "row", "values": [{"c": [1]}]}, "metrics[0].values[0]"),
    ({"name": "a", "type": "table", "values": [{"c": 1}]}, "metrics[0].values[0]"),
    ({"name": "a", "type": "image", "values": [{"path": "../etc/passwd"}]}, "metrics[0].values[0]"),
])
def test_bad_entries_name_the_field(entry, field):
    with pytest.raises(Invalid) as error:
        parse_series([entry])
    assert error.value.field == field


def test_one_name_sent_as_two_types_is_refused():
    with pytest.raises(Invalid):
        parse_series([{"name": "a", "values": [1]}, {"name": "a", "type": "list", "values": [[1]]}])


def test_chunks_hold_at_most_chunk_points_and_keep_every_point():
    series = Series("m", "scalar", [float(i) for i in range(12_345)], list(range(12_345)), [0.0] * 12_345)
    items = _chunks("r1", series, "b1")
    assert [i["count"] for i in items] == [5000, 5000, 2345]
    assert len({i["sk"] for i in items}) == 3
    values = [v for i in items for v in json.loads(i["data"])["v"]]
    assert values == series.values


def test_chunks_split_by_bytes_and_refuse_a_single_oversized_value(monkeypatch):
    monkeypatch.setattr(metrics, "CHUNK_BYTES", 2_000)
    rows = Series("t", "list", [["x" * 100] for _ in range(50)], [None] * 50, [0.0] * 50)
    items = _chunks("r1", rows, "b1")
    assert len(items) > 1 and all(len(i["data"]) <= 2_000 for i in items)
    assert sum(i["count"] for i in items) == 50
    with pytest.raises(TooLarge):
        _chunks("r1", Series("t", "list", [["x" * 5_000]], [None], [0.0]), "b1")
