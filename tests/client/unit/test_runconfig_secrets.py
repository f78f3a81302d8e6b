"""ScriptRunConfig.secret_variables: checked like the service checks them, kept in files, sent when set."""
from __future__ import annotations

import pytest

from nimbus import ScriptRunConfig
from nimbus.exceptions import InvalidError


def test_secret_variables_are_sent_and_kept_in_a_configuration_file(tmp_path):
    config = ScriptRunConfig(source_directory=tmp_path, script="train.py", secret_variables={"DB_PASSWORD": "db-pw"})
    assert config.to_dict()["secret_variables"] == {"DB_PASSWORD": "db-pw"}
    loaded = ScriptRunConfig.load(config.save("job"))
    assert loaded.secret_variables == {"DB_PASSWORD": "db-pw"} and loaded.to_dict() == config.to_dict()


def test_without_secret_variables_the_wire_form_is_as_before():
    assert "secret_variables" not in ScriptRunConfig(script="train.py").to_dict()


@pytest.mark.parametrize("variables, field", [
    ({"1BAD": "ok"}, "secret_variables"),
    ({"OK": "bad.name"}, "secret_variables.OK"),
    ({"OK": 3}, "secret_variables.OK"),
    ("DB=x", "secret_variables"),
])
def test_bad_secret_variables_are_refused_naming_the_field(variables, field):
    with pytest.raises(InvalidError) as refused:
        ScriptRunConfig(script="train.py", secret_variables=variables)
    assert refused.value.field == field


def test_a_variable_is_plain_or_secret_not_both():
    with pytest.raises(InvalidError) as refused:
        ScriptRunConfig(script="train.py", environment_variables={"DB": "x"}, secret_variables={"DB": "db"})
    assert refused.value.field == "secret_variables.DB"
