"""ComputeTarget in the SDK, against the live in-process platform."""
from __future__ import annotations

import pytest

from nimbus import ComputeTarget, ConflictError, Experiment, InvalidError, ScriptRunConfig


def test_create_read_list_and_delete(workspace):
    box = ComputeTarget.create(workspace, "box", "instance", {"max_concurrent_runs": 2})
    assert (box.type, box.settings, box.state, box.active_runs) == ("instance", {"max_concurrent_runs": 2},
                                                                    "Succeeded", 0)
    assert [(t.name, t.type) for t in ComputeTarget.list(workspace)] == [("local", "local"), ("box", "instance")]
    assert ComputeTarget(workspace, "box").settings == {"max_concurrent_runs": 2}
    with pytest.raises(ConflictError):
        ComputeTarget.create(workspace, "box", "instance")
    box.delete()
    assert [t.name for t in ComputeTarget.list(workspace)] == ["local"]


def test_bad_settings_name_the_field(workspace):
    with pytest.raises(InvalidError) as caught:
        ComputeTarget.create(workspace, "box", "instance", {"max_concurrent_runs": -1})
    assert caught.value.field == "settings.max_concurrent_runs"


def test_a_target_with_a_queued_run_is_kept_until_the_run_ends(workspace, tmp_path):
    box = ComputeTarget.create(workspace, "box", "instance")
    (tmp_path / "train.py").write_text("print('hi')\n")
    run = Experiment(workspace, "sdk").submit(ScriptRunConfig(source_directory=tmp_path, script="train.py",
                                                              compute_target="box"))
    assert run.get_details()["compute_target"] == "box" and box.active_runs == 1
    with pytest.raises(ConflictError) as caught:
        box.delete()
    assert run.id in str(caught.value)
    run.cancel()
    box.delete()
