"""Model.get_model_path: reads $NIMBUS_MODEL_DIR/models.json, with the standard library only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nimbus.exceptions import ConfigurationError, NotFoundError
from nimbus.model_path import ModelNotFoundError, get_model_path

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def model_dir(tmp_path, monkeypatch) -> Path:
    index = {"iris": {"2": "model.pkl", "10": "model.pkl", "9": "model.pkl"}, "bert": {"1": "bert"},
             "loose": {"3": "."}}
    (tmp_path / "models.json").write_text(json.dumps(index))
    monkeypatch.setenv("NIMBUS_MODEL_DIR", str(tmp_path))
    return tmp_path


def test_the_highest_version_by_number_is_the_default(model_dir):
    assert get_model_path("iris") == str(model_dir / "iris" / "10" / "model.pkl")
    assert get_model_path("iris", 2) == str(model_dir / "iris" / "2" / "model.pkl")
    assert get_model_path("iris", "9") == str(model_dir / "iris" / "9" / "model.pkl")
    assert get_model_path("bert") == str(model_dir / "bert" / "1" / "bert")
    assert get_model_path("loose") == str(model_dir / "loose" / "3")


def test_missing_models_and_versions_name_what_is_there(model_dir):
    with pytest.raises(ModelNotFoundError, match=r"'nope' is not among .*bert, iris, loose"):
        get_model_path("nope")
    with pytest.raises(NotFoundError, match=r"no version 3 here \(present: 2, 9, 10\)"):
        get_model_path("iris", 3)


def test_without_a_model_folder_the_error_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("NIMBUS_MODEL_DIR", raising=False)
    with pytest.raises(ConfigurationError, match="NIMBUS_MODEL_DIR is not set"):
        get_model_path("iris")
    monkeypatch.setenv("NIMBUS_MODEL_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="does not exist"):
        get_model_path("iris")
    (tmp_path / "models.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        get_model_path("iris")


def test_importing_model_loads_no_http_client(model_dir):
    # A scoring function may have only the standard library: `from nimbus import Model` must not need more.
    code = ("import sys\nfrom nimbus import Model\n"
            "print(Model.get_model_path('iris'))\n"
            "print(sorted(m for m in ('requests', 'urllib3', 'yaml', 'pathspec', 'nimbus.client') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=model_dir,
                          check=True)
    assert done.stdout.splitlines() == [str(model_dir / "iris" / "10" / "model.pkl"), "[]"]
