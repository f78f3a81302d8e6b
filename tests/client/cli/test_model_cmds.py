"""`nimbus model …` against the live in-process platform: JSON and table output, errors, exit codes."""
from __future__ import annotations

import zipfile

import pytest

from nimbus import Experiment


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_text('{"w": [1, 2]}')
    return path


def test_register_show_list_and_download(nimbus, model_file, tmp_path):
    registered = nimbus("model", "register", "iris", "--path", str(model_file), "--tag", "stage=dev",
                        "--property", "acc=0.9", "--description", "first", "--framework", "custom",
                        "--no-progress", "-o", "json", json_output=True)
    assert registered["id"] == "iris:1" and registered["tags"] == {"stage": "dev"}
    assert registered["properties"] == {"acc": "0.9"} and registered["framework"] == "custom"
    nimbus("model", "register", "iris", "--path", str(model_file), "--tag", "stage=prod", "--no-progress",
           "-o", "json", json_output=True)

    assert nimbus("model", "show", "iris:1", "-o", "json", json_output=True)["description"] == "first"
    table = nimbus("model", "show", "iris")
    assert table.exit_code == 0 and "version:" in table.stdout and "model.json" in table.stdout

    listed = nimbus("model", "list", "-o", "json", json_output=True)
    assert [m["id"] for m in listed] == ["iris:2"]
    every = nimbus("model", "list", "--all-versions", "--tag", "stage=dev", "-o", "json", json_output=True)
    assert [m["id"] for m in every] == ["iris:1"]
    lines = nimbus("model", "list", "--all-versions").stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "ALIASES", "TAGS", "FRAMEWORK", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [["iris", "2"], ["iris", "1"]]

    wrote = nimbus("model", "download", "iris:1", "--target", str(tmp_path / "d"), "-o", "json", json_output=True)
    assert wrote == {"id": "iris:1", "path": str(tmp_path / "d" / "model.json")}
    assert (tmp_path / "d" / "model.json").read_text() == '{"w": [1, 2]}'
    again = nimbus("model", "download", "iris:1", "--target", str(tmp_path / "d"))
    assert again.exit_code == 1 and "already exists" in again.stderr
    zipped = nimbus("model", "download", "iris", "--target", str(tmp_path / "z"), "--zip", "-o", "json",
                    json_output=True)
    with zipfile.ZipFile(zipped["zip"]) as archive:
        assert archive.namelist() == ["model.json"]


def test_register_from_a_run(nimbus, workspace, model_file):
    with Experiment(workspace, "train").start_logging() as run:
        run.upload_file("outputs/model.json", model_file)
    registered = nimbus("model", "register", "iris", "--run", run.id, "--path", "outputs/model.json", "-o", "json",
                        json_output=True)
    assert registered["lineage"]["run_id"] == run.id
    missing = nimbus("model", "register", "iris", "--run", run.id, "--path", "outputs/none.json")
    assert missing.exit_code == 1 and "outputs/none.json" in missing.stderr


def test_aliases_and_delete(nimbus, model_file):
    for _ in range(2):
        nimbus("model", "register", "iris", "--path", str(model_file), "--no-progress", "-o", "json",
               json_output=True)
    assert nimbus("model", "alias", "iris", "prod", "1", "-o", "json", json_output=True) == \
        {"alias": "prod", "version": 1, "previous": None}
    assert nimbus("model", "alias", "iris", "prod", "2", "-o", "json", json_output=True)["previous"] == 1
    assert nimbus("model", "show", "iris:prod", "-o", "json", json_output=True)["version"] == 2
    shown = nimbus("model", "aliases", "iris").stdout.splitlines()
    assert shown[:2] == ["ALIAS  VERSION", "prod   2"]
    assert shown[3].split() == ["ALIAS", "FROM", "TO", "BY", "AT"] and len(shown) == 6
    assert nimbus("model", "alias", "iris", "prod", "--delete", "-o", "json", json_output=True) == \
        {"alias": "prod", "previous": 2}
    assert nimbus("model", "aliases", "iris", "-o", "json", json_output=True)["aliases"] == {}
    assert nimbus("model", "alias", "iris", "prod").exit_code == 2  # neither VERSION nor --delete

    assert nimbus("model", "delete", "iris:1", "-o", "json", json_output=True) == {"deleted": "iris:1"}
    gone = nimbus("model", "show", "iris:1")
    assert gone.exit_code == 1 and gone.stderr.startswith("error: ") and "iris:1" in gone.stderr
    assert nimbus("model", "delete", "iris").exit_code == 2


def test_bad_input_is_one_line(nimbus, tmp_path):
    missing = nimbus("model", "register", "iris", "--path", str(tmp_path / "nothing"))
    assert missing.exit_code == 2 and "--path" in missing.stderr
    bad_name = nimbus("model", "register", "-bad-", "--path", str(tmp_path))
    assert bad_name.exit_code != 0
    bad_tag = nimbus("model", "register", "iris", "--path", str(tmp_path), "--tag", "novalue")
    assert bad_tag.exit_code == 2 and "KEY=VALUE" in bad_tag.stderr


def test_batch_score_refuses_inputs_outside_the_source_folder(nimbus, model_file, tmp_path):
    nimbus("model", "register", "iris", "--path", str(model_file), "--no-progress", "-o", "json", json_output=True)
    source, outside = tmp_path / "src", tmp_path / "data"
    source.mkdir()
    outside.mkdir()
    (source / "score.py").write_text("def run(raw):\n    return raw\n")
    refused = nimbus("model", "batch-score", "iris:1", "--entry-script", "score.py", "--inputs", str(outside),
                     "--source-dir", str(source))
    assert refused.exit_code == 1 and "inside the source folder" in refused.stderr
