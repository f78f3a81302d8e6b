"""The scoring runtime against every row of the answer table (docs/models-and-endpoints.md), with a real
scikit-learn model."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from chalicelib.scoring.runtime import MAX_BODY, ScoringInitError, ScoringRuntime, encode_result
from tests.server.unit.scoring_helpers import SETOSA, VIRGINICA, write_model_dir, write_source


@pytest.fixture
def runtime(tmp_path):
    runtime = ScoringRuntime(write_source(tmp_path / "source"), "score.py", write_model_dir(tmp_path / "models"),
                             timeout_s=5)
    runtime.load()
    return runtime


def score(runtime, request) -> tuple[int, object]:
    answer = runtime.score(json.dumps(request).encode(), "application/json")
    assert answer.content_type == "application/json"
    return answer.status, json.loads(answer.body)


def test_json_able_result_is_200(runtime, tmp_path):
    assert os.environ["NIMBUS_MODEL_DIR"] == str((tmp_path / "models").resolve())
    assert score(runtime, {"data": [SETOSA, VIRGINICA]}) == (200, [0, 2])


def test_raw_data_is_the_body_as_text(runtime):
    status, body = score(runtime, {"action": "echo", "x": "é"})
    assert status == 200 and body["raw_type"] == "str" and json.loads(body["raw"]) == {"action": "echo", "x": "é"}


def test_numpy_values_and_non_finite_numbers(runtime):
    status, body = score(runtime, {"action": "numpy", "data": [SETOSA]})
    assert status == 200
    assert len(body["proba"][0]) == 3 and abs(sum(body["proba"][0]) - 1) < 1e-9
    assert body["half"] == 0.5 and body["three"] == 3 and body["strided"] == [0, 2, 4]
    assert score(runtime, {"action": "nan"}) == (200, [None, 1.5, None])  # NaN and inf: null, valid JSON
    assert score(runtime, {"action": "big"}) == (200, {"n": 2 ** 70})  # beyond 64 bits: still exact


def test_run_raising_is_500_scoring_error(runtime, capfd):
    assert score(runtime, {"action": "fail"}) == (
        500, {"code": "ScoringError", "message": "ValueError: no such flower"})
    assert "Traceback" in capfd.readouterr().err  # the whole traceback goes to the deployment's logs


def test_result_not_json_serialisable_is_500(runtime):
    assert score(runtime, {"action": "object"}) == (
        500, {"code": "ScoringError", "message": "run() returned object, which is not JSON-serialisable"})
    with pytest.raises(TypeError):
        encode_result({1j})


def test_body_over_6_mb_is_413(runtime):
    answer = runtime.score(b"x" * (MAX_BODY + 1), "application/json")
    assert answer.status == 413
    assert json.loads(answer.body)["code"] == "PayloadTooLarge" and json.loads(answer.body)["field"] == "body"
    padded = json.dumps({"data": [SETOSA], "pad": "x" * (MAX_BODY - 100)}).encode()
    assert len(padded) <= MAX_BODY and runtime.score(padded, None).status == 200


def test_body_that_is_not_utf8_is_400(runtime):
    answer = runtime.score(b"\xff\xfe", "application/octet-stream")
    assert answer.status == 400 and json.loads(answer.body)["field"] == "body"


def test_timeout_is_504_and_asks_for_recycling(runtime):
    runtime.timeout_s = 0.3
    started = time.monotonic()
    answer = runtime.score(json.dumps({"action": "sleep", "seconds": 1.0}).encode(), None)
    assert answer.status == 504 and answer.recycle
    assert json.loads(answer.body)["code"] == "ScoringTimeout"
    assert time.monotonic() - started < 0.9
    # While the late run() still runs, the runtime cannot answer...
    assert runtime.overrun
    again = runtime.score(json.dumps({"data": [SETOSA]}).encode(), None)
    assert again.status == 504 and again.recycle
    # ...and once it has returned, it can again, without its late result leaking into a later answer.
    deadline = time.monotonic() + 3
    while runtime.overrun and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not runtime.overrun
    assert score(runtime, {"data": [VIRGINICA]}) == (200, [2])


def test_run_calls_are_serialised(runtime):
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(score(runtime, {"action": "sleep", "seconds": 0.05})))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [(200, "awake")] * 6
    assert score(runtime, {"action": "overlapped"}) == (200, False)


# --- init failures ---------------------------------------------------------------------------------
def failing(tmp_path, text: str, entry: str = "score.py") -> ScoringInitError:
    runtime = ScoringRuntime(write_source(tmp_path / "source", text), entry, write_model_dir(tmp_path / "models"))
    with pytest.raises(ScoringInitError) as caught:
        runtime.load()
    answer = runtime.score(b"{}", None)  # a failed deployment answers 503 with its error
    assert answer.status == 503
    assert json.loads(answer.body) == {"code": "DeploymentFailed", "message": caught.value.message}
    return caught.value


def test_import_failure(tmp_path):
    error = failing(tmp_path, "import json\nimport no_such_package_here\n\ndef run(raw_data):\n    return 1\n")
    assert error.message == ("ModuleNotFoundError: No module named 'no_such_package_here' "
                             "(while importing score.py, at score.py line 2)")
    assert "Traceback" in error.traceback


def test_init_raising(tmp_path):
    error = failing(tmp_path, "def init():\n    x = 1\n    raise RuntimeError('model file is corrupt')\n\n"
                              "def run(raw_data):\n    return 1\n")
    assert error.message == "RuntimeError: model file is corrupt (in init(), at score.py line 3)"


def test_init_failing_inside_a_library_points_at_the_script(tmp_path):
    error = failing(tmp_path, "import json\n\ndef init():\n    json.loads('{')\n\ndef run(raw_data):\n    return 1\n")
    assert error.message.startswith("JSONDecodeError: Expecting property name")
    assert error.message.endswith("(in init(), at score.py line 4)")


def test_syntax_error_missing_run_and_missing_script(tmp_path):
    assert failing(tmp_path / "a", "def init(:\n    pass\n").message.endswith(
        "(while importing score.py, at score.py line 1)")
    assert failing(tmp_path / "b", "def init():\n    pass\n").message == (
        "AttributeError: score.py defines no run(raw_data) function (while importing score.py)")
    assert failing(tmp_path / "c", "", entry="other.py").message == (
        "FileNotFoundError: entry script other.py not found in the source folder (while loading other.py)")


def test_entry_script_in_a_subfolder_imports_its_neighbours(tmp_path):
    source = write_source(tmp_path / "source", "from helper import answer\n\ndef run(raw_data):\n    return answer()\n",
                          name="app/main.py")
    (source / "app" / "helper.py").write_text("def answer():\n    return 42\n")
    runtime = ScoringRuntime(source, "app/main.py", write_model_dir(tmp_path / "models"))
    runtime.load()  # no init(): nothing to prepare
    assert score(runtime, {}) == (200, 42)


def test_the_iris_example_entry_script(tmp_path):
    """examples/iris/score.py with the model examples/iris/train.py writes (a pickled LogisticRegression)."""
    example = Path(__file__).resolve().parents[3] / "examples" / "iris"
    runtime = ScoringRuntime(example, "score.py", write_model_dir(tmp_path / "models", version=2))
    runtime.load()
    assert score(runtime, {"data": [SETOSA, VIRGINICA]}) == (200, ["setosa", "virginica"])
