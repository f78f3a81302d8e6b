"""The SDK's Model against the live in-process platform: register, find, download, change, delete."""
from __future__ import annotations

import sys
import types
import zipfile

import pytest

from nimbus import Experiment, Model
from nimbus import client as client_module
from nimbus.exceptions import ConflictError, InvalidError, NotFoundError, ServiceUnavailableError


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04pickle")
    return path


@pytest.fixture
def model_folder(tmp_path):
    root = tmp_path / "bert"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "weights" / "part-0.bin").write_bytes(b"0" * 1000)
    return root


def test_a_file_is_registered_found_and_downloaded(workspace, model_file, tmp_path, capsys):
    model = Model.register(workspace, "iris", model_file, tags={"stage": "dev"}, properties={"accuracy": 0.97},
                           description="first", model_framework="scikit-learn", model_framework_version="1.5")
    assert (model.name, model.version, model.id, model.asset_path) == ("iris", 1, "iris:1", "model.pkl")
    assert model.tags == {"stage": "dev"} and model.properties == {"accuracy": "0.97"}
    assert (model.framework, model.framework_version, model.description) == ("scikit-learn", "1.5", "first")
    assert model.files == [{"path": "model.pkl", "size": 8}] and model.run_id is None
    assert "iris" in capsys.readouterr().err  # the upload's progress bar

    again = Model(workspace, "iris")
    assert again == model and again.details == model.details
    assert Model(workspace, "iris", 1).version == 1

    path = model.download(tmp_path / "out")
    assert path == str(tmp_path / "out" / "model.pkl") and open(path, "rb").read() == b"\x80\x04pickle"
    with pytest.raises(FileExistsError):
        model.download(tmp_path / "out")
    assert model.download(tmp_path / "out", exist_ok=True) == path

    archive = model.download(tmp_path / "zipped", zip=True)
    with zipfile.ZipFile(archive) as opened:
        assert archive.endswith("iris-1.zip") and opened.read("model.pkl") == b"\x80\x04pickle"


def test_a_folder_is_registered_under_its_name(workspace, model_folder, tmp_path):
    model = Model.register(workspace, "bert", model_folder, show_progress=False)
    assert model.asset_path == "bert" and model.total_bytes == 1013
    assert sorted(f["path"] for f in model.files) == ["bert/config.json", "bert/weights/part-0.bin"]
    path = model.download(tmp_path / "d")
    assert path == str(tmp_path / "d" / "bert")
    assert (tmp_path / "d" / "bert" / "weights" / "part-0.bin").read_bytes() == b"0" * 1000
    with pytest.raises(InvalidError):
        Model.register(workspace, "bert", tmp_path / "missing", show_progress=False)


def test_listing_tags_properties_aliases_and_delete(workspace, model_file):
    first = Model.register(workspace, "iris", model_file, tags={"stage": "dev"}, show_progress=False)
    second = Model.register(workspace, "iris", model_file, tags={"stage": "prod"}, show_progress=False)
    other = Model.register(workspace, "other", model_file, show_progress=False)

    assert [m.id for m in Model.list(workspace)] == ["iris:2", "other:1"]
    assert [m.id for m in Model.list(workspace, latest=False)] == ["iris:2", "iris:1", "other:1"]
    assert [m.id for m in Model.list(workspace, name="iris", latest=False)] == ["iris:2", "iris:1"]
    assert [m.id for m in Model.list(workspace, tags={"stage": "dev"}, latest=False)] == ["iris:1"]
    assert [m.id for m in Model.list(workspace, tags=[["stage", "prod"]])] == ["iris:2"]
    assert [m.id for m in Model.list(workspace, tags=["stage"])] == ["iris:2"]

    first.add_tags({"team": "a"})
    first.remove_tags(["stage"])
    first.add_properties({"auc": "0.9"})
    assert first.tags == {"team": "a"} and first.properties == {"auc": "0.9"}
    with pytest.raises(ConflictError, match="write-once"):
        first.add_properties({"auc": "0.1"})
    first.update(description="kept")
    assert Model(workspace, "iris", 1).description == "kept"

    first.set_alias("prod")
    assert first.aliases == ["prod"] and Model(workspace, "iris", "prod") == first
    second.set_alias("prod")
    assert Model(workspace, "iris", "prod") == second and first.get_details()["aliases"] == []

    other.delete()
    with pytest.raises(NotFoundError):
        Model(workspace, "other")
    with pytest.raises(NotFoundError):
        Model(workspace, "iris", "staging")


def test_a_run_registers_its_stored_output(workspace, model_file):
    with Experiment(workspace, "train").start_logging() as run:
        run.upload_file("outputs/model.pkl", model_file)
        model = run.register_model("iris", "outputs/model.pkl", tags={"from": "run"}, model_framework="custom")
    assert model.run_id == run.id and model.lineage["experiment"] == "train"
    assert model.files == [{"path": "model.pkl", "size": 8}] and model.framework == "custom"
    with pytest.raises(InvalidError) as refused:
        run.register_model("iris", "outputs/nothing.pkl")
    assert refused.value.field == "path"


def test_get_model_path_and_deploy_delegate(workspace, tmp_path, monkeypatch):
    (tmp_path / "models.json").write_text('{"iris": {"1": "model.pkl"}}')
    monkeypatch.setenv("NIMBUS_MODEL_DIR", str(tmp_path))
    assert Model.get_model_path("iris") == str(tmp_path / "iris" / "1" / "model.pkl")

    calls = []
    fake = types.ModuleType("nimbus.webservice")
    fake.deploy = lambda *args, **kwargs: calls.append((args, kwargs)) or "service"
    monkeypatch.setitem(sys.modules, "nimbus.webservice", fake)
    assert Model.deploy(workspace, "blue", ["m"], "inference", "config", endpoint="iris") == "service"
    assert Model.deploy(workspace, "blue", ["m"], "inference", "config", wait=False) == "service"
    assert calls == [((workspace, "blue", ["m"], "inference", "config"), {"endpoint": "iris", "wait": True}),
                     ((workspace, "blue", ["m"], "inference", "config"), {"endpoint": None, "wait": False})]


def test_a_registration_whose_answer_is_lost_is_retried_into_the_same_version(workspace, model_file, monkeypatch):
    # Given a connection that fails just after the service stored the first registration
    monkeypatch.setattr(client_module.time, "sleep", lambda seconds: None)
    real_exchange, lost = workspace.client._exchange, []

    def exchange(method, url, body, headers):
        answer = real_exchange(method, url, body, headers)
        if method == "POST" and url.endswith("/models/iris/versions") and not lost:
            lost.append(answer)
            raise ServiceUnavailableError("connection reset before the answer")
        return answer

    monkeypatch.setattr(workspace.client, "_exchange", exchange)

    # When the model is registered
    model = Model.register(workspace, "iris", model_file, show_progress=False)

    # Then the retry answers the version the first attempt made, and there is only that one
    assert lost and model.version == 1
    assert [m.version for m in Model.list(workspace, name="iris", latest=False)] == [1]
