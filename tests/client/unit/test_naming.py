"""The one name policy (nimbus/naming.py) that the SDK and the service both apply."""
from __future__ import annotations

import pytest

from nimbus.metric_values import check_name
from nimbus.exceptions import InvalidError
from nimbus.naming import MAX_NAME, MAX_PATH, name_problem, path_problem


@pytest.mark.parametrize("name", ["loss", "train/loss", "top 5", "précision", "a" * MAX_NAME, "v1.2"])
def test_names_that_read_as_what_they_are_pass(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name, problem", [
    ("", "1-255"), ("a" * (MAX_NAME + 1), "1-255"), (7, "1-255"),
    ("../x", "'..'"), ("/etc/passwd", "'/'"), ("a/", "'/'"), ("a//b", "empty"), ("./a", "'.'"),
    ("a\\b", "backslash"), (" ", "space"), (" loss", "space"), ("loss ", "space"), ("a/ b", "space"),
    ("a\u202eb", "U+202E"), ("a\u2066b", "U+2066"), ("a\u200fb", "U+200F"), ("tab\there", "U+0009"),
    ("nul\x00", "U+0000"), ("del\x7f", "U+007F"),
])
def test_names_that_mislead_or_escape_are_refused_with_why(name, problem):
    assert problem in name_problem(name)


def test_paths_are_relative_names_up_to_their_own_length():
    assert path_problem("models/" + "a" * 200 + "/model.pkl") is None
    assert "relative" in path_problem("/abs.txt") and "relative" in path_problem("../up.txt")
    assert "1-1024" in path_problem("a/" * (MAX_PATH // 2 + 1))
    assert "U+202E" in path_problem("outputs/a\u202eb.txt")


def test_the_sdk_refuses_before_sending():
    with pytest.raises(InvalidError, match="U\\+202E") as refused:
        check_name("acc\u202e")
    assert refused.value.field == "name"
