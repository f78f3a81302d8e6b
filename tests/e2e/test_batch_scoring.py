"""Batch scoring end to end: a registered model's entry script over a folder of inputs, as a local run."""
from __future__ import annotations

import json

import pytest

from nimbus import Experiment, Model
from nimbus.batch_scoring import submit_batch_scoring
from tests.e2e.test_script_runs import wait_until_ended

ENTRY_SCRIPT = '''
import json
from nimbus import Model

def init():
    global weights
    with open(Model.get_model_path("linear")) as stream:
        weights = json.load(stream)
    print("loaded", weights)

def run(raw_data):
    x = json.loads(raw_data)["x"]
    return weights["a"] * x + weights["b"]
'''


@pytest.fixture
def source(tmp_path):
    """An entry script and inputs: two good files (one in a subfolder) and one the script cannot score."""
    folder = tmp_path / "src"
    (folder / "inputs" / "more").mkdir(parents=True)
    (folder / "score.py").write_text(ENTRY_SCRIPT)
    (folder / "inputs" / "a.json").write_text('{"x": 1}')
    (folder / "inputs" / "more" / "b.json").write_text('{"x": 10}')
    (folder / "inputs" / "bad.json").write_text('{"y": 0}')
    return folder


def test_a_registered_model_scores_a_folder_of_inputs(workspace, source, tmp_path):
    # Given a tiny "model" registered twice (the alias pins the first) and an entry script reading it
    (tmp_path / "linear.json").write_text('{"a": 2, "b": 1}')
    Model.register(workspace, "linear", tmp_path / "linear.json", show_progress=False).set_alias("prod")
    (tmp_path / "linear.json").write_text('{"a": 100, "b": 100}')
    Model.register(workspace, "linear", tmp_path / "linear.json", show_progress=False)

    # When the folder is scored with the aliased version, going on past the bad input
    run = submit_batch_scoring(Experiment(workspace, "scoring"), ["linear:prod"], "score.py", source,
                               source / "inputs", continue_on_error=True, tags={"kind": "batch"})
    details = wait_until_ended(run)

    # Then the run completed with one JSON line per input, in path order, and counted them
    assert details["status"] == "Completed", (details.get("error"), run.get_logs("stderr")["text"][-2000:])
    assert "linear:1" in details["run_config"]["command"]
    target = run.download_file("outputs/predictions.jsonl", tmp_path / "predictions.jsonl")
    lines = [json.loads(line) for line in open(target)]
    assert lines == [{"file": "a.json", "result": 3},
                     {"file": "bad.json", "error": "KeyError: 'x'"},
                     {"file": "more/b.json", "result": 21}]
    metrics = run.get_metrics()
    assert (metrics["scored"], metrics["failed"]) == (2, 1)
    assert "loaded {'a': 2, 'b': 1}" in run.get_logs("stdout")["text"]

    # And without --continue-on-error, a failed input fails the run
    strict = submit_batch_scoring(Experiment(workspace, "scoring"), ["linear"], "score.py", source, "inputs")
    assert wait_until_ended(strict)["status"] == "Failed"
