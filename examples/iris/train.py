"""Train an iris classifier and record it with Nimbus.

Submitted with `nimbus run submit --experiment iris --input iris=iris train.py` it reads the registered
dataset `iris` (the runner downloads it before the script starts) and logs to its run; run by hand
(`python train.py --data data/iris.csv`) it reads that file and logs to an offline run that prints what
it would record. Without either it falls back to the copy of the data scikit-learn ships.
"""
import argparse
import csv
import glob
import os
import pickle
import warnings

import matplotlib

matplotlib.use("Agg")  # no display where runs execute
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from nimbus import Run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10, help="training passes, each logged")
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    parser.add_argument("--data", help="an iris CSV file or folder (default: the run's `iris` input)")
    args = parser.parse_args()

    run = Run.get_context()
    run.log("C", args.C)
    source = args.data or run.input_datasets.get("iris")
    features, labels = read_iris(source) if source else load_iris(return_X_y=True)
    print(f"{len(labels)} rows from {source or 'scikit-learn'}")
    train_x, test_x, train_y, test_y = train_test_split(features, labels, test_size=0.3, random_state=0,
                                                        stratify=labels)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # early epochs stop short on purpose
    model = None
    for epoch in range(1, args.epochs + 1):
        # More iterations each epoch: the accuracy curve shows the solver converging.
        model = LogisticRegression(C=args.C, max_iter=epoch * 5)
        model.fit(train_x, train_y)
        accuracy = accuracy_score(test_y, model.predict(test_x))
        run.log("accuracy", accuracy, step=epoch)
        print(f"epoch {epoch}: accuracy {accuracy:.3f}")

    figure, axes = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_estimator(model, test_x, test_y, ax=axes)
    run.log_image("confusion_matrix", plot=figure)
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/model.pkl", "wb") as handle:
        pickle.dump(model, handle)
    run.log("final_accuracy", accuracy)
    print("model written to outputs/model.pkl")


SPECIES = ("setosa", "versicolor", "virginica")  # numbered as load_iris() numbers them, which score.py expects


def read_iris(path: str) -> tuple[list[list[float]], list[int]]:
    """Four measurements and the species' number, from a CSV file or every CSV file under a folder."""
    files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "**", "*.csv"), recursive=True))
    features, labels = [], []
    for name in files:
        with open(name, newline="") as handle:
            for row in csv.DictReader(handle):
                features.append([float(row[k]) for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")])
                labels.append(SPECIES.index(row["species"]))
    if not labels:
        raise SystemExit(f"no iris rows in {path}")
    return features, labels


if __name__ == "__main__":
    main()
