"""Values DynamoDB cannot hold natively still round-trip through the adapter's encoding."""
import math

from chalicelib.store.dynamo_table import from_attribute, to_attribute


def test_floats_outside_dynamodb_range_and_non_finite_round_trip():
    for value in (0.1, -2.5, 1e-300, 1e300, math.inf, -math.inf, 0.0, 123456789.123456789):
        assert from_attribute(to_attribute(value)) == value
    assert math.isnan(from_attribute(to_attribute(math.nan)))


def test_nested_values_round_trip():
    value = {"a": [1, 2.5, {"b": None, "c": True}], "d": "", "e": {"f": math.inf}}
    assert from_attribute(to_attribute(value)) == value
