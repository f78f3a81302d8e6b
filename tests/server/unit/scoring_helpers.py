"""What the scoring tests share: a real iris model and an entry script that exercises every answer."""
from __future__ import annotations

import json
import pickle
import textwrap
from functools import lru_cache
from pathlib import Path

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]

# Reads models.json itself, as Model.get_model_path does, so these tests depend on the runtime only.
ENTRY_SCRIPT = textwrap.dedent('''
    import json, os, pickle, threading, time

    import numpy as np

    model = None
    inside = 0
    overlapped = False
    guard = threading.Lock()

    def init():
        global model
        root = os.environ["NIMBUS_MODEL_DIR"]
        index = json.load(open(os.path.join(root, "models.json")))
        version = max(index["iris"], key=int)
        with open(os.path.join(root, "iris", version, index["iris"][version]), "rb") as handle:
            model = pickle.load(handle)

    def run(raw_data):
        global inside, overlapped
        request = json.loads(raw_data)
        action = request.get("action")
        with guard:
            inside += 1
            overlapped = overlapped or inside > 1
        try:
            if action == "fail":
                raise ValueError("no such flower")
            if action == "sleep":
                time.sleep(request["seconds"])
                return "awake"
            if action == "object":
                return object()
            if action == "numpy":
                return {"proba": model.predict_proba(request["data"]), "half": np.float32(0.5), "three": np.int64(3),
                        "strided": np.arange(6)[::2]}
            if action == "nan":
                return [float("nan"), 1.5, float("inf")]
            if action == "big":
                return {"n": 2 ** 70}
            if action == "echo":
                return {"raw_type": type(raw_data).__name__, "raw": raw_data}
            if action == "overlapped":
                return overlapped
            return model.predict(request["data"]).tolist()
        finally:
            with guard:
                inside -= 1
''')


@lru_cache(maxsize=1)
def iris_model_bytes() -> bytes:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    return pickle.dumps(LogisticRegression(max_iter=500).fit(features, labels))


def write_model_dir(models: Path, version: int = 1) -> Path:
    """The layout the runtime gets: <models>/iris/<version>/model.pkl and models.json."""
    target = models / "iris" / str(version)
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.pkl").write_bytes(iris_model_bytes())
    (models / "models.json").write_text(json.dumps({"iris": {str(version): "model.pkl"}}))
    return models


def write_source(source: Path, text: str = ENTRY_SCRIPT, name: str = "score.py") -> Path:
    (source / name).parent.mkdir(parents=True, exist_ok=True)
    (source / name).write_text(text)
    return source
