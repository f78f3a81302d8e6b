"""Entry script of the iris classifier that train.py writes to outputs/model.pkl.

Deploy it with the registered model `iris`; then score with

    {"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}  ->  ["setosa", "virginica"]
"""
import json
import pickle

from nimbus import Model

SPECIES = ("setosa", "versicolor", "virginica")  # load_iris() target order
model = None


def init():
    """Once per cold start: load the model the deployment names."""
    global model
    with open(Model.get_model_path("iris"), "rb") as handle:
        model = pickle.load(handle)


def run(raw_data):
    """One request: {"data": [[sepal length, sepal width, petal length, petal width], ...]}."""
    rows = json.loads(raw_data)["data"]
    return [SPECIES[int(label)] for label in model.predict(rows)]
