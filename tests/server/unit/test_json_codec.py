"""The fast JSON codec keeps NaN and ±inf exact: strings for clients, literals in storage."""
import math

from chalicelib.json_codec import dumps_stored, dumps_strict, loads


def test_strict_json_spells_non_finite_numbers_and_keeps_nulls():
    data = dumps_strict({"v": [1.5, math.nan, math.inf, -math.inf, None], "n": None})
    assert loads(data) == {"v": [1.5, "NaN", "Infinity", "-Infinity", None], "n": None}
    assert dumps_strict({"v": [1.0, None]}) == b'{"v":[1.0,null]}'


def test_stored_json_round_trips_non_finite_numbers():
    value = {"v": [0.1, math.nan, -math.inf], "s": [0, None, 2]}
    back = loads(dumps_stored(value))
    assert back["v"][0] == 0.1 and math.isnan(back["v"][1]) and back["v"][2] == -math.inf
    assert back["s"] == [0, None, 2]
    assert loads(dumps_stored({"a": [1, 2]})) == {"a": [1, 2]}



def test_integers_beyond_64_bits_are_written_exactly():
    big = 10**30
    assert dumps_stored({"n": big}) == '{"n":' + str(big) + "}"
    assert dumps_strict({"n": big}) == b'{"n":' + str(big).encode() + b"}"


def test_large_finite_lists_whose_sum_overflows_are_not_mistaken_for_infinity():
    assert loads(dumps_strict([1e308, 1e308, None])) == [1e308, 1e308, None]
    assert loads(dumps_strict([1.0, None, "x", math.nan])) == [1.0, None, "x", "NaN"]
    assert loads(dumps_strict([math.inf, -math.inf, None])) == ["Infinity", "-Infinity", None]
