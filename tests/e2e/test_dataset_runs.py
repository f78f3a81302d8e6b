"""Real runs read registered datasets: the runner makes each input ready before the script starts, from
the machine's cache the second time, and each dataset version lists the runs that read it."""
from __future__ import annotations

import time

import pytest

from nimbus import Dataset, Experiment, ScriptRunConfig
from nimbus.exceptions import NotFoundError

SCRIPT = '''
import os, sys
from nimbus import Run

run = Run.get_context()
folder = sys.argv[1]
files = sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)
print("argument:", folder == run.input_datasets["rows"], files, flush=True)
table = run.input_datasets["table"]
frame = table.to_pandas_dataframe()
print("table:", type(table).__name__, len(frame), list(frame.columns), flush=True)
open(os.path.join(folder, "e2e", "rows", "a.csv"), "w").write("changed by the script")
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
'''


def wait_until_ended(run, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        details = run.get_details()
        if details["status"] in ("Completed", "Failed", "Canceled"):
            return details
        time.sleep(0.2)
    raise AssertionError(f"run {run.id} still {details['status']} after {timeout} s")


def test_a_run_reads_its_inputs_and_a_second_fetches_nothing(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("NIMBUS_CACHE_DIR", str(tmp_path / "client-cache"))
    data = tmp_path / "data"
    (data / "rows").mkdir(parents=True)
    (data / "rows" / "a.csv").write_text("x,y\n1,2\n3,4\n")
    (data / "rows" / "b.csv").write_text("x,y\n5,6\n")
    blob = workspace.get_default_datastore()
    blob.upload(data, target_path="e2e")
    rows = Dataset.File.from_files((blob, "e2e/rows/")).register(workspace, "rows")
    table = Dataset.Tabular.from_delimited_files((blob, "e2e/rows/*.csv")).register(workspace, "table")
    source = tmp_path / "src"
    source.mkdir()
    (source / "read.py").write_text(SCRIPT)
    config = ScriptRunConfig(source_directory=source, script="read.py",
                             arguments=[rows.as_named_input("rows").as_mount()],
                             inputs=[table.as_named_input("table")])
    experiment = Experiment(workspace, "datasets")

    runs = []
    for _ in range(2):
        run = experiment.submit(config)
        details = wait_until_ended(run)
        log = run.get_logs("stdout")["text"]
        assert details["status"] == "Completed", log
        assert "argument: True ['e2e/rows/a.csv', 'e2e/rows/b.csv']" in log
        assert "table: TabularDataset 3 ['x', 'y']" in log
        assert "downloaded, not mounted" in log
        runs.append((run, log))
    assert "from the machine cache" not in runs[0][1] and "from the machine cache" in runs[1][1]
    # The first run's write into its copy reached neither the second run nor the data.
    pinned = runs[0][0].get_details()["run_config"]["inputs"]
    assert [(i["name"], i["dataset"], i["version"], i["fingerprint"]) for i in pinned] == [
        ("table", "table", 1, table.fingerprint), ("rows", "rows", 1, rows.fingerprint)]
    assert [r["run_id"] for r in rows.runs()] == [runs[0][0].id, runs[1][0].id]
    assert [(d["input"], d["name"], d["version"], d["mode"]) for d in runs[0][0].get_datasets()["inputs"]] == [
        ("table", "table", 1, "direct"), ("rows", "rows", 1, "mount")]
    assert rows.verify()["matches"]
    # A model registered from the run reaches the data it was trained on.
    model = runs[0][0].register_model("reader", "outputs/model.txt")
    assert [(d["name"], d["version"], d["input"]) for d in model.lineage["datasets"]] == [
        ("table", 1, "table"), ("rows", 1, "rows")]


def test_an_unknown_input_or_placeholder_is_refused_at_submit(workspace, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "read.py").write_text("print('never')\n")
    experiment = Experiment(workspace, "datasets")
    with pytest.raises(NotFoundError) as unknown:
        experiment.submit(ScriptRunConfig(source_directory=source, script="read.py",
                                          inputs=[{"name": "x", "dataset": "ghost"}]))
    assert "ghost" in str(unknown.value)
    with pytest.raises(Exception) as undeclared:
        experiment.submit(ScriptRunConfig(source_directory=source, script="read.py",
                                          arguments=["${{inputs.nothing}}"]))
    assert "nothing" in str(undeclared.value)


WRITER = '''
import os, sys
from nimbus import Run

folder = Run.get_context().output_datasets["prepared"]
assert sys.argv[1] == folder
os.makedirs(os.path.join(folder, "part"), exist_ok=True)
open(os.path.join(folder, "part", "clean.csv"), "w").write("x\\\\n1\\\\n")
'''


def test_a_run_writes_an_output_registered_as_a_dataset_version(workspace, tmp_path, monkeypatch):
    from nimbus.dataset import OutputFileDatasetConfig

    monkeypatch.setenv("NIMBUS_CACHE_DIR", str(tmp_path / "client-cache"))
    source = tmp_path / "src"
    source.mkdir()
    (source / "write.py").write_text(WRITER)
    output = OutputFileDatasetConfig("prepared").register_on_complete("prepared")
    run = Experiment(workspace, "datasets").submit(ScriptRunConfig(source_directory=source, script="write.py",
                                                                   arguments=[output]))
    details = wait_until_ended(run)
    log = run.get_logs("stdout")["text"]
    assert details["status"] == "Completed", (details.get("error"), log)
    assert f"outputs/{run.id}/prepared" in log and "registered as prepared:1" in log
    made = Dataset.get_by_name(workspace, "prepared")
    assert made.details["written_by_run"] == run.id
    assert made.to_path() == [f"outputs/{run.id}/prepared/part/clean.csv"]
    assert made.download(tmp_path / "got")[0].endswith("clean.csv")
    assert run.get_datasets() == {"run_id": run.id, "inputs": [], "outputs": [
        {"name": "prepared", "version": 1, "fingerprint": made.fingerprint}]}
