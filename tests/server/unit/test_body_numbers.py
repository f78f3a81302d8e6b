"""Integer fields of request bodies take whole numbers however JSON writes them, and nothing else."""
import pytest
from pydantic import ValidationError

from chalicelib.api.models import DeploymentConfigBody, RunConfig, SetAlias, SetTraffic


def test_whole_floats_become_ints_in_every_kind_of_integer_field():
    assert SetAlias.model_validate({"version": 3.0}).version == 3
    assert SetTraffic.model_validate({"traffic": {"blue": 100.0}}).traffic == {"blue": 100}
    config = DeploymentConfigBody.model_validate({"memory_mb": 2048.0, "max_instances": 2.0})
    assert (config.memory_mb, config.max_instances) == (2048, 2)
    assert RunConfig.model_validate({"script": "train.py", "node_count": 2.0}).node_count == 2


@pytest.mark.parametrize("value", [3.5, float("inf"), float("nan"), "3", True, None])
def test_anything_else_is_refused(value):
    with pytest.raises(ValidationError):
        SetAlias.model_validate({"version": value})


def test_bounds_still_apply_to_whole_floats():
    with pytest.raises(ValidationError):
        SetAlias.model_validate({"version": 0.0})
