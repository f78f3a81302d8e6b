"""`nimbus environment …` against the live in-process platform: files, versions, output, errors."""
from __future__ import annotations

import pytest

from nimbus import Environment, ScriptRunConfig
from nimbus.exceptions import InvalidError


def test_create_from_a_requirements_file_list_and_show(nimbus, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# training\nnumpy==2.0.0  # pinned\n\nscikit-learn>=1.5\n")
    created = nimbus("environment", "create", "sklearn", "--file", str(requirements), "--python", "3.11",
                     "--var", "OMP_NUM_THREADS=1", "-o", "json", json_output=True)
    assert created["id"] == "sklearn:1" and created["definition"] == {
        "python": "3.11", "pip": ["numpy==2.0.0", "scikit-learn>=1.5"], "variables": {"OMP_NUM_THREADS": "1"},
        "base_image": "python:3.11-slim"}
    again = nimbus("environment", "create", "sklearn", "--file", str(requirements), "--var", "OMP_NUM_THREADS=1",
                   "-o", "json", json_output=True)
    assert again["version"] == 1 and again["hash"] == created["hash"]

    conda = tmp_path / "env.yml"
    conda.write_text("name: x\ndependencies:\n  - python=3.11.4\n  - pip:\n    - pandas==2.2.0\n")
    table = nimbus("environment", "create", "sklearn", "--file", str(conda))
    assert table.exit_code == 0 and "version:" in table.stdout and "  pandas==2.2.0" in table.stdout

    lines = nimbus("environment", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "PYTHON", "PACKAGES", "USED", "CREATED"]
    assert lines[1].split()[:5] == ["sklearn", "2", "3.11", "1", "no"]
    shown = nimbus("environment", "show", "sklearn:1", "-o", "json", json_output=True)
    assert shown["definition"]["pip"] == ["numpy==2.0.0", "scikit-learn>=1.5"] and shown["builds"] == []


def test_errors_name_what_is_wrong(nimbus, tmp_path):
    bad = tmp_path / "requirements.txt"
    bad.write_text("numpy\nnot a requirement!!\n")
    result = nimbus("environment", "create", "bad", "--file", str(bad))
    assert result.exit_code == 1 and "pip[1]" in result.stderr
    assert nimbus("environment", "create", "x", "--file", str(bad), "--var", "NOEQUALS").exit_code == 2
    missing = nimbus("environment", "show", "nothing:3")
    assert missing.exit_code == 1 and "not found" in missing.stderr
    assert nimbus("environment", "show", "nothing:").exit_code == 2


def test_a_script_run_config_takes_a_registered_environment(workspace, tmp_path):
    env = Environment.from_pip_requirements("plain", _requirements(tmp_path, "requests\n"))
    with pytest.raises(InvalidError, match="not registered"):
        ScriptRunConfig(script="train.py", environment=env)
    registered = env.register(workspace)
    assert ScriptRunConfig(script="train.py", environment=registered).to_dict()["environment"] == "plain:1"
    assert Environment.list(workspace)["plain"].pip_packages == ["requests"]
    assert Environment.get(workspace, "plain", 1).python_version == "3.11"


def _requirements(folder, text):
    path = folder / "requirements.txt"
    path.write_text(text)
    return path


def test_run_submit_names_an_environment(nimbus, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("print('hi')\n")
    nimbus("environment", "create", "plain", "--file", str(_requirements(tmp_path, "")))
    submitted = nimbus("run", "submit", "-e", "cli", "--source-dir", str(source), "--environment", "plain",
                       "-o", "json", "train.py", json_output=True)
    assert submitted["run_config"]["environment"] == "plain:1"
    unknown = nimbus("run", "submit", "-e", "cli", "--source-dir", str(source), "--environment", "nope", "train.py")
    assert unknown.exit_code == 1 and "environment nope:latest not found" in unknown.stderr
